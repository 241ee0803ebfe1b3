#!/usr/bin/env python3
"""Memory of messages in progress on a running `bulkbench serve --sink spool:DIR`.

Starts the server on 127.0.0.1 (port chosen by the kernel) with a spool in a temporary
directory, reads its resident set size, opens N connections (default 30) and takes each one
into DATA (EHLO, MAIL, RCPT, DATA, `354`), then sends each the first `--sent` bytes (default
9,000,000) of a `--size`-byte message (default 10,000,000: under the default 10 MiB limit).
The connections come from 127.0.0.1 to 127.0.0.16, as the load generator's do.
Once the server has read all of it (every client socket's send queue and every server
socket's receive queue empty, from /proc/net/tcp) and its RSS has settled, it reads
VmRSS and VmHWM again: the growth is what the messages in the middle of their DATA cost.
Then it sends the rest of every message and its end marker, checks each `250`, that every
spooled file holds the whole message and that `tmp/` is empty, sends QUIT, stops the server
with SIGTERM and checks that it exits 0.

Python 3 standard library only; builds nothing (run `cargo build --release -p bulkbench`
first). Every wait is bounded and the only address ever connected to is the server's
loopback one.

    python3 benches/data_memory.py [BINARY] [-n 30] [--size 10000000] [--sent 9000000]
                                   [-- SERVE_FLAGS...]

Exit status: 0 when every message was spooled whole, the server exited 0 and the growth
stayed within --max-delta-mib; 1 otherwise; 2 for bad arguments.
"""

import argparse
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idle_connections import (Failure, fmt_mib, raise_fd_limit, read_listening_line,
                              status_kib, stop_server)

ROOT = Path(__file__).resolve().parent.parent
LINE = b"z" * 78 + b"\r\n"
PREAMBLE = (b"EHLO memory.example\r\nMAIL FROM:<big@shop.example>\r\n"
            b"RCPT TO:<ann@example.org>\r\nDATA\r\n")


def content(size):
    """`size` bytes of 80-byte CRLF lines (the last one cut short, then ended)."""
    lines, rest = divmod(size, len(LINE))
    if rest == 1:  # no room for a CRLF of its own: lengthen the line before
        lines, rest = lines - 1, rest + len(LINE)
    body = LINE * lines
    if rest:
        body += b"z" * (rest - 2) + b"\r\n"
    return body


def read_until(sock, marker, timeout_s):
    deadline = time.monotonic() + timeout_s
    data = b""
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"no {marker!r} within {timeout_s:.0f} s (got {data[-200:]!r})")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise Failure(f"server closed the connection; it said {data[-200:]!r}")
        data += chunk
    return data


def send_all(socks, payload, timeout_s):
    """Sends `payload` on every socket, interleaved, without blocking on any one."""
    deadline = time.monotonic() + timeout_s
    offsets = {sock: 0 for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_WRITE)
        while offsets:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"sending took over {timeout_s:.0f} s")
            for key, _ in selector.select(left):
                sock = key.fileobj
                try:
                    sent = sock.send(payload[offsets[sock]:offsets[sock] + 262_144])
                except BlockingIOError:
                    continue
                offsets[sock] += sent
                if offsets[sock] == len(payload):
                    del offsets[sock]
                    selector.unregister(sock)
    for sock in socks:
        sock.setblocking(True)


def tcp_queues(port):
    """(client send-queue bytes, server receive-queue bytes) of connections to `port`."""
    sent_unacked = unread = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            if fields[3] == "0A":  # the listening socket
                continue
            if local_port == port:
                unread += rx
            elif remote_port == port:
                sent_unacked += tx
    return sent_unacked, unread


def wait_consumed(port, pid, timeout_s):
    """Until the server has read everything sent and its RSS stays put for 1 s."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        queued = tcp_queues(port)
        rss = status_kib(pid, "VmRSS")
        if queued == (0, 0) and last is not None and abs(rss - last) < 256:
            return
        last = rss if queued == (0, 0) else None
        time.sleep(1.0)
    raise Failure(f"the server did not read all content within {timeout_s:.0f} s "
                  f"(queues {tcp_queues(port)})")


def run(args):
    raise_fd_limit(args.connections + 64)
    spool = tempfile.TemporaryDirectory(prefix="bulkbench-data-memory-")
    log = tempfile.TemporaryFile(mode="w+b")
    command = [str(args.binary), "serve", "--listen", "127.0.0.1:0",
               "--population", str(args.population), "--sink", f"spool:{spool.name}",
               "--max-connections", "1000", *args.serve_flags]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=log)
    socks = []
    message = content(args.size)
    try:
        address = read_listening_line(server, 60)
        time.sleep(1.0)
        rss_before = status_kib(server.pid, "VmRSS")
        for i in range(args.connections):
            # From 16 loopback addresses, as the load generator connects: the server's
            # per-address limit is a tenth of its connection limit.
            sock = socket.create_connection(address, timeout=10,
                                            source_address=(f"127.0.0.{1 + i % 16}", 0))
            socks.append(sock)
            greeting = read_until(sock, b"\r\n", 10)
            if not greeting.startswith(b"220"):
                raise Failure(f"connection {i} refused: {greeting!r}")
            sock.sendall(PREAMBLE)
            read_until(sock, b"\r\n354", 10)
        started = time.monotonic()
        send_all(socks, message[:args.sent], 300)
        wait_consumed(address[1], server.pid, 120)
        took = time.monotonic() - started
        rss_during = status_kib(server.pid, "VmRSS")
        hwm = status_kib(server.pid, "VmHWM")
        in_tmp = len(list(Path(spool.name, "tmp").iterdir()))

        send_all(socks, message[args.sent:] + b".\r\n", 300)
        ids = []
        for sock in socks:
            reply = read_until(sock, b"\r\n", 120).decode("ascii", "replace").strip()
            if not reply.startswith("250 "):
                raise Failure(f"end of message answered {reply!r}")
            ids.append(reply.rsplit(" ", 1)[1])
            sock.sendall(b"QUIT\r\n")
            read_until(sock, b"221", 10)
        new = Path(spool.name, "new")
        sizes = {path.name: path.stat().st_size for path in new.iterdir()}
        header = (b"Bulkbench-Kind: MAIL\r\nBulkbench-Sender: <big@shop.example>\r\n"
                  b"Bulkbench-Recipient: <ann@example.org>\r\n\r\n")
        want = len(header) + args.size
        whole = sum(1 for i in ids if sizes.get(i) == want)
        left_in_tmp = len(list(Path(spool.name, "tmp").iterdir()))

        delta = rss_during - rss_before
        print(f"server: {' '.join(command[1:])}")
        print(f"{args.connections} connections in DATA, {args.sent:,} of {args.size:,} bytes "
              f"sent on each ({took:.1f} s); files in tmp/ meanwhile: {in_tmp}")
        print(f"RSS before {fmt_mib(rss_before)}, during {fmt_mib(rss_during)}: "
              f"growth {fmt_mib(delta)}; peak (VmHWM) {fmt_mib(hwm)}")
        print(f"messages spooled whole after the rest was sent: {whole} of "
              f"{args.connections}; files left in tmp/: {left_in_tmp}")
        within = delta <= args.max_delta_mib * 1024
        print(f"budget: growth <= {args.max_delta_mib} MiB: {'ok' if within else 'EXCEEDED'}")
        if whole != args.connections or left_in_tmp:
            raise Failure("not every message was spooled whole")
    finally:
        for sock in socks:
            sock.close()
        time.sleep(0.5)
        status = stop_server(server, 30)
        spool.cleanup()
    print(f"server exit status after SIGTERM: {status}")
    if status != 0:
        log.seek(0)
        tail = log.read()[-2000:].decode("utf-8", "replace")
        raise Failure(f"server exited {status}; its log ends with:\n{tail}")
    return within


def main():
    parser = argparse.ArgumentParser(
        description="Server memory for messages in the middle of DATA (loopback only).",
        epilog="Arguments after `--` are passed to `serve`.")
    parser.add_argument("binary", nargs="?", type=Path,
                        default=ROOT / "target/release/bulkbench",
                        help="release bulkbench binary [%(default)s]")
    parser.add_argument("--population", type=Path,
                        default=ROOT / "scenarios/example-population.tsv")
    parser.add_argument("-n", "--connections", type=int, default=30,
                        help="connections in DATA at once [%(default)s]")
    parser.add_argument("--size", type=int, default=10_000_000,
                        help="bytes of content of each message [%(default)s]")
    parser.add_argument("--sent", type=int, default=9_000_000,
                        help="bytes of it sent before measuring [%(default)s]")
    parser.add_argument("--max-delta-mib", type=float, default=20.0,
                        help="budget for the RSS growth [%(default)s MiB]")

    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(extra) - bool(extra or "--" in argv)])
    args.serve_flags = extra
    if not 0 <= args.sent <= args.size or args.size < 2 or args.connections < 1:
        parser.error("need 0 <= --sent <= --size and at least one connection")
    try:
        ok = run(args)
    except Failure as failure:
        print(f"data_memory: {failure}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
