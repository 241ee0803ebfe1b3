#!/usr/bin/env python3
"""Writes the hand-written seed corpus into corpus/<target>/ (run from this folder).

The seeds are committed; this script only documents how they were made and regenerates them
(it overwrites its own files and leaves any other file alone). Header bytes are explained in
bulk-proto/src/fuzzing.rs, next to each fuzz body.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# command_line: one line, without its CRLF.
COMMANDS = {
    "ehlo": b"EHLO client.example",
    "ehlo_literal": b"ehlo [192.0.2.7]",
    "ehlo_spaces": b"EHLO   spaced.example   ",
    "ehlo_empty": b"EHLO",
    "helo": b"HELO x",
    "mail": b"MAIL FROM:<ann@example.org>",
    "mail_null": b"MAIL FROM:<>",
    "mail_null_params": b"MAIL FROM:<> SIZE=0 BODY=7BIT",
    "mail_space_after_colon": b"mail from: <Ann.Lee+tag@Example.COM>",
    "mail_source_route": b"MAIL FROM:<@relay.one,@relay-2.example:joe@x.org>",
    "mail_bad_route": b"MAIL FROM:<@relay.one,relay.two:joe@x.org>",
    "mail_quoted": b'MAIL FROM:<"joe smith"@x.org>',
    "mail_quoted_escapes": b'MAIL FROM:<"a\\"b\\\\c>d"@x.org> SIZE=12',
    "mail_quoted_empty": b'MAIL FROM:<""@x.org>',
    "mail_literal_v4": b"MAIL FROM:<a@[192.0.2.1]>",
    "mail_literal_v6": b"MAIL FROM:<a@[IPv6:2001:db8::1]>",
    "mail_literal_bad": b"MAIL FROM:<a@[1.2[3]>",
    "mail_size_max": b"MAIL FROM:<a@b.c> SIZE=18446744073709551615",
    "mail_size_overflow": b"MAIL FROM:<a@b.c> SIZE=18446744073709551616",
    "mail_size_twice": b"MAIL FROM:<a@b.c> SIZE=1 SIZE=2",
    "mail_unknown_param": b"MAIL FROM:<a@b.c> SMTPUTF8 RET=HDRS",
    "mail_params_spaces": b"MAIL FROM:<a@b.c>   body=8bitmime    size=007  ",
    "mail_no_space_before_param": b"MAIL FROM:<a@b.c>SIZE=1",
    "mail_dots": b"MAIL FROM:<a..b@b.c>",
    "mail_hyphen_label": b"MAIL FROM:<a@-b.c>",
    "mail_syntax": b"MAIL TO:<a@b.c>",
    "bulk": b"BULK FROM:<news@shop.example>",
    "bulk_params": b"bulk from:<news@shop.example> SIZE=1000 BODY=8BITMIME",
    "bulk_null": b"BULK FROM:<>",
    "bulk_bare": b"BULK",
    "rcpt": b"RCPT TO:<user1@example.com>",
    "rcpt_postmaster": b"RCPT TO:<postmaster>",
    "rcpt_postmaster_domain": b"RCPT TO:<Postmaster@x.org>",
    "rcpt_notify": b"RCPT TO:<a@b.c> NOTIFY=NEVER",
    "rcpt_empty": b"RCPT TO:<>",
    "rcpt_no_brackets": b"RCPT TO:a@b.c",
    "rcpt_route": b"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>",
    "rcpt_long_local": b"RCPT TO:<" + b"l" * 65 + b"@x.org>",
    "rcpt_max_path": b"RCPT TO:<"
    + b"l" * 64
    + b"@"
    + b".".join([b"d" * 63, b"d" * 63, b"d" * 61])
    + b">",
    "rcpt_long_domain": b"RCPT TO:<a@" + b".".join([b"a" * 60] * 5) + b">",
    "rcpt_atext": b"RCPT TO:<!#$%&'*+-/=?^_`{|}~@x.org>",
    "data": b"DATA",
    "data_arg": b"DATA now",
    "rset": b"RSET",
    "rset_space": b"rset ",
    "noop": b"NOOP",
    "noop_arg": b"NOOP anything at all",
    "quit": b"QUIT",
    "vrfy": b"VRFY ann",
    "vrfy_empty": b"VRFY",
    "help": b"HELP BULK",
    "expn": b"EXPN list",
    "auth": b"AUTH PLAIN dGVzdA==",
    "bdat": b"BDAT 100 LAST",
    "starttls": b"STARTTLS",
    "starttls_lower_spaces": b"starttls   ",
    "starttls_param": b"STARTTLS now",
    "starttls_glued": b"STARTTLSX",
    "verb_glued": b"RCPTX TO:<a@b.c>",
    "http": b"GET / HTTP/1.1",
    "empty": b"",
    "short": b"QU",
    "nul": b"NOOP\x00",
    "cr": b"NOOP\r",
    "lf_inside": b"RCPT TO:<a@b.c>\nDATA",
    "tab": b"HELO\tx",
    "eight_bit": b"RCPT TO:<\xc3\xa9@b.c>",
    "long_line": b"NOOP " + b"x" * 600,
}

# data_receiver: a header byte (low 3 bits: how many chunk-length bytes follow; bits 3-5:
# the size limit, see DATA_MAX_SIZES), the chunk lengths, then the content after 354.
ONE_BYTE_UNLIMITED = b"\x00"
ONE_BYTE_1MIB = b"\x30"


def chunks(*lens, limit=0):
    return bytes([len(lens) | (limit << 3)] + list(lens))


DATA = {
    "empty_message": ONE_BYTE_UNLIMITED + b".\r\n",
    "simple": ONE_BYTE_1MIB + b"Subject: hi\r\n\r\nbody\r\n.\r\n",
    "dot_stuffed": chunks(3, 5) + b"..leading dot\r\n.x\r\na\r\n..\r\n.\r\n",
    "trailing_commands": chunks(7) + b"hi\r\n.\r\nQUIT\r\n",
    "smuggle_lf_dot_lf": ONE_BYTE_UNLIMITED + b"a\n.\nQUIT\n",
    "smuggle_crlf_dot_lf": chunks(2) + b"a\r\n.\nRSET\r\n",
    "smuggle_lf_dot_crlf": chunks(1, 4) + b"a\n.\r\nMAIL FROM:<x@y.z>\r\n.\r\n",
    "smuggle_cr_dot_cr": chunks(32) + b"a\r.\rRCPT TO:<in@evil.example>\r\n.\r\n",
    "bare_lf": chunks(5) + b"a\nb\r\n.\r\n",
    "bare_cr": chunks(2, 0, 3) + b"a\rb\r\n.\r\n",
    "cr_cr_lf": ONE_BYTE_UNLIMITED + b"a\r\r\n.\r\n",
    "dot_cr_x": ONE_BYTE_UNLIMITED + b".\rx\r\n.\r\n",
    "dot_cr_cr_lf": chunks(1) + b".\r\r\n.\r\n",
    "dot_lf": chunks(3) + b".\n.\r\n",
    "long_line": chunks(31, 17, limit=7) + b"x" * 999 + b"\r\n.\r\n",
    "line_just_fits": chunks(32, limit=7) + b"x" * 998 + b"\r\n.\r\n",
    "stuffed_long_line": chunks(32, 32, 1, limit=7) + b"." + b"x" * 998 + b"\r\n.\r\n",
    "too_big": chunks(4, limit=3) + b"0123456789abcdef\r\n.\r\n",
    "exactly_limit": chunks(1, limit=3) + b"01234567\r\n.\r\n",
    "limit_zero": chunks(2, limit=1) + b"x\r\n.\r\n",
    "unterminated": chunks(6) + b"no end marker here\r\n.",
    "ends_on_cr": ONE_BYTE_UNLIMITED + b"text\r",
    "empty_chunks": chunks(0, 0, 3) + b"a\r\n.\r\n",
    "eight_bit_and_nul": chunks(5, 9) + b"\x00\xff\xc3\xa9\r\n.\r\n",
    "two_messages": chunks(11) + b"one\r\n.\r\ntwo\r\n.\r\n",
    "headers_and_blank": chunks(13, 2)
    + b"From: a@b.c\r\nTo: d@e.f\r\nSubject: test\r\n\r\nHello\r\n\r\n.\r\n",
}

# session: three header bytes (see fuzzing::session), then what the client sends.
HEALTHY = b"\x00\x00\x07"  # one read of the whole input vs reads of 1 byte
SPLIT_64 = b"\x00\x50\x2a"  # reads of up to 64 bytes
SPLIT_7 = b"\x04\x30\x11"  # keep messages, reads of up to 7 bytes


def lines(*commands):
    return b"".join(c + b"\r\n" for c in commands)


BULK_TX = lines(
    b"EHLO c.example",
    b"BULK FROM:<news@shop.example> SIZE=100 BODY=8BITMIME",
    b"RCPT TO:<in1@example.org>",
    b"RCPT TO:<out1@example.org>",
    b"RCPT TO:<nobody@example.org>",
    b"RCPT TO:<far@elsewhere.example>",
    b"RCPT TO:<Postmaster>",
    b"DATA",
) + b"Subject: x\r\n\r\n..dot\r\n.\r\n" + lines(b"QUIT")

SESSION = {
    "bulk_transaction": HEALTHY + BULK_TX,
    "bulk_transaction_split": SPLIT_64 + BULK_TX,
    "bulk_transaction_kept": SPLIT_7 + BULK_TX,
    "mail_transaction": HEALTHY
    + lines(
        b"EHLO c",
        b"MAIL FROM:<>",
        b"RCPT TO:<out1@example.org>",
        b"RCPT TO:<nobody@example.org>",
        b"RCPT TO:<postmaster>",
        b"DATA",
        b"hello",
        b".",
        b"QUIT",
    ),
    "helo_then_bulk": HEALTHY + lines(b"HELO c", b"BULK FROM:<a@b.c>", b"MAIL FROM:<a@b.c>"),
    "no_helo": HEALTHY + lines(b"MAIL FROM:<a@b.c>", b"RCPT TO:<in@b.c>", b"DATA"),
    "nested_mail": SPLIT_64
    + lines(b"EHLO c", b"MAIL FROM:<a@b.c>", b"RCPT TO:<in@x.org>", b"BULK FROM:<a@b.c>"),
    "rset_barrier": SPLIT_7
    + lines(
        b"EHLO c",
        b"MAIL FROM:<a@b.c>",
        b"RCPT TO:<in@x.org>",
        b"RSET",
        b"RCPT TO:<in@x.org>",
        b"EHLO again",
        b"NOOP",
    ),
    "all_refused_then_data": HEALTHY
    + lines(b"EHLO c", b"BULK FROM:<a@b.c>", b"RCPT TO:<out@b.c>", b"DATA", b"body", b"."),
    "smuggling": HEALTHY
    + lines(b"EHLO c", b"MAIL FROM:<a@b.c>", b"RCPT TO:<in@x.org>", b"DATA")
    + b"hi\n.\nRCPT TO:<in@evil.example>\r\n.\r\nQUIT\r\n",
    "smuggling_cr": SPLIT_7
    + lines(b"EHLO c", b"MAIL FROM:<a@b.c>", b"RCPT TO:<in@x.org>", b"DATA")
    + b"hi\r.\rMAIL FROM:<x@y.z>\r\n.\r\n",
    "bare_lf_commands": HEALTHY + b"FOO\r\nNOOP\nNOOP\r\n\nQUIT\n",
    "too_many_errors": HEALTHY + b"XYZZY\r\n" * 12,
    "error_limit_one": b"\x00\x02\x05" + lines(b"EHLO c", b"BOGUS", b"NOOP"),
    "long_command": SPLIT_64 + b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n",
    "long_command_exact": b"\x00\x60\x01" + b"NOOP " + b"x" * 505 + b"\r\n" + b"NOOP " + b"x" * 506 + b"\r\n",
    "long_no_lf": b"\x00\x10\x09" + b"A" * 1100,
    "recipient_limit": b"\x40\x00\x03"
    + lines(
        b"EHLO c",
        b"BULK FROM:<a@b.c>",
        b"RCPT TO:<in1@x.org>",
        b"RCPT TO:<in2@x.org>",
        b"RCPT TO:<in3@x.org>",
        b"DATA",
        b".",
    ),
    "harvest": b"\x18\x30\x21"
    + lines(
        b"EHLO c",
        b"BULK FROM:<a@b.c>",
        b"RCPT TO:<out@x.org>",
        b"RCPT TO:<no1@x.org>",
        b"RCPT TO:<no2@x.org>",
        b"RCPT TO:<in@x.org>",
        b"RCPT TO:<out@x.org>",
        b"QUIT",
    ),
    "backend_down": b"\x02\x40\x05"
    + lines(b"EHLO c", b"BULK FROM:<a@b.c>", b"RCPT TO:<in@x.org>", b"DATA", b"x", b"."),
    "backend_flaky": b"\x03\x50\x06"
    + lines(
        b"EHLO c",
        b"BULK FROM:<a@b.c>",
        b"RCPT TO:<in1@x.org>",
        b"RCPT TO:<in2@x.org>",
        b"RCPT TO:<in3@x.org>",
        b"DATA",
        b"x",
        b".",
    ),
    "size_declared_too_big": HEALTHY
    + lines(b"EHLO c", b"MAIL FROM:<a@b.c> SIZE=99999999999", b"QUIT"),
    "message_too_big": b"\x04\x08\x0b"
    + lines(b"EHLO c", b"MAIL FROM:<a@b.c>", b"RCPT TO:<in@x.org>", b"DATA")
    + b"0123456789\r\n.\r\nNOOP\r\n",
    "two_messages": b"\x04\x20\x0c"
    + lines(
        b"EHLO c",
        b"MAIL FROM:<a@b.c>",
        b"RCPT TO:<in@x.org>",
        b"DATA",
        b"first",
        b".",
        b"BULK FROM:<>",
        b"RCPT TO:<in2@x.org>",
        b"RCPT TO:<in3@x.org>",
        b"DATA",
        b"..second",
        b".",
        b"QUIT",
    ),
    "pipelined_after_quit": HEALTHY + lines(b"EHLO c", b"QUIT", b"NOOP", b"MAIL FROM:<a@b.c>"),
    "idle_close": b"\x00\x80\x0d" + lines(b"EHLO c", b"MAIL FROM:<a@b.c>", b"RCPT TO:<in@x.org>"),
    "vrfy_help_noop": HEALTHY + lines(b"VRFY ann@b.c", b"HELP", b"NOOP", b"EXPN x", b"QUIT"),
    "binary_garbage": b"\x00\x30\x0e" + bytes(range(256)),
    "empty": HEALTHY,
    "header_only": b"\x00",
    # Byte 0 bit 5: STARTTLS offered (0x20); required with byte 2's bit 7 as well.
    "starttls_off": HEALTHY + lines(b"EHLO c", b"STARTTLS", b"STARTTLS x", b"QUIT"),
    "starttls_injection": b"\x20\x00\x07"
    + lines(
        b"EHLO c",
        b"STARTTLS",
        b"MAIL FROM:<a@b.c>",
        b"RCPT TO:<in@x.org>",
        b"EHLO c",
        b"STARTTLS",
        b"QUIT",
    ),
    "starttls_required": b"\x20\x50\xaa"
    + lines(
        b"EHLO c",
        b"BULK FROM:<a@b.c>",
        b"STARTTLS",
        b"EHLO c",
        b"BULK FROM:<a@b.c>",
        b"RCPT TO:<in@x.org>",
        b"DATA",
        b"x",
        b".",
        b"QUIT",
    ),
    "starttls_in_transaction": b"\x24\x30\x11"
    + lines(
        b"EHLO c",
        b"MAIL FROM:<a@b.c>",
        b"RCPT TO:<in1@x.org>",
        b"RCPT TO:<in2@x.org>",
        b"STARTTLS",
        b"RCPT TO:<in3@x.org>",
        b"EHLO c",
        b"MAIL FROM:<a@b.c>",
        b"RCPT TO:<in4@x.org>",
    ),
}


def main():
    for name, data in COMMANDS.items():
        write("command_line", name, data)
    for name, data in DATA.items():
        write("data_receiver", name, data)
    for name, data in SESSION.items():
        write("session", name, data)


if __name__ == "__main__":
    main()
