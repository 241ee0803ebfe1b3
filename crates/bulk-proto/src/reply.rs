//! Server replies: every reply the server sends, and its encoding onto the wire.
//!
//! Most replies are fixed lines (named constants in [`replies`]), so encoding one is a single
//! copy. The few that carry the server's name, its size limit or a queue id are variants
//! filled from a [`ServerIdentity`] when encoded.

use std::fmt;

/// What replies need to know about the server that sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The name in the greeting, the EHLO reply and 421 replies.
    pub hostname: String,
    /// The limit advertised as `SIZE n` in the EHLO reply, in octets.
    pub max_message_size: u64,
}

impl Default for ServerIdentity {
    fn default() -> Self {
        ServerIdentity {
            hostname: "localhost".to_owned(),
            max_message_size: crate::limits::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// The id a message is queued under, shown in the `250 2.0.0` reply and used as its spool
/// file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// Why the server ends a session with `421` (RFC 5321 section 3.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// The session reached its protocol error limit (`421 4.7.0`).
    TooManyErrors,
    /// No command arrived within the idle timeout (`421 4.4.2`).
    IdleTimeout,
    /// The server is shutting down (`421 4.3.2`).
    ShuttingDown,
    /// The connection limit is reached; sent instead of the greeting (`421 4.3.2`).
    TooManyConnections,
    /// The client's address already holds its share of connections; sent instead of the
    /// greeting (`421 4.7.0`).
    TooManyFromAddress,
    /// A command line was started but not completed within the line deadline
    /// (`421 4.4.2`).
    LineTimeout,
    /// Message content arrived too slowly: the DATA phase passed its deadline
    /// (`421 4.4.2`).
    DataTimeout,
}

impl Closing {
    fn status_and_text(self) -> (&'static str, &'static str) {
        match self {
            Closing::TooManyErrors => ("4.7.0", "Error: too many errors, closing connection"),
            Closing::IdleTimeout => ("4.4.2", "Error: idle timeout exceeded, closing connection"),
            Closing::ShuttingDown => ("4.3.2", "Service shutting down, closing connection"),
            Closing::TooManyConnections => ("4.3.2", "Too many connections, try again later"),
            Closing::TooManyFromAddress => (
                "4.7.0",
                "Too many connections from your address, try again later",
            ),
            Closing::LineTimeout => (
                "4.4.2",
                "Error: command line not completed in time, closing connection",
            ),
            Closing::DataTimeout => (
                "4.4.2",
                "Error: message content arriving too slowly, closing connection",
            ),
        }
    }
}

/// Appends `value` in decimal, without allocating (replies are encoded per command).
fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `value` as 16 upper-case hex digits, as [`QueueId`] displays.
fn push_hex16(out: &mut Vec<u8>, value: u64) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..16).rev() {
        out.push(HEX[((value >> (shift * 4)) & 0xF) as usize]);
    }
}

/// One reply, possibly several lines (EHLO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A fixed single-line reply, given without its CRLF: `"250 2.1.5 Recipient ok"`.
    Fixed(&'static str),
    /// `220 <host> ESMTP`.
    Greeting,
    /// The multi-line EHLO reply listing the extensions, BULK among them.
    Ehlo,
    /// The EHLO reply of a server that offers STARTTLS (RFC 3207) to a session not yet
    /// under TLS: [`Reply::Ehlo`] with `STARTTLS` among the extensions.
    EhloStartTls,
    /// `250 <host>`.
    Helo,
    /// `250 2.0.0 Ok: queued as <id>`.
    Queued(QueueId),
    /// A `421` reply after which the server closes the connection.
    Closing(Closing),
}

/// The EHLO keywords after the first line. `SIZE` is written separately because it carries
/// the configured limit.
const EHLO_KEYWORDS: [&str; 4] = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "BULK"];
/// [`EHLO_KEYWORDS`] with STARTTLS, offered only before TLS starts. BULK stays last in
/// both, so a client sees the same reply with or without TLS but for this one line.
const EHLO_KEYWORDS_STARTTLS: [&str; 5] = [
    "PIPELINING",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "STARTTLS",
    "BULK",
];

/// Appends the lines of an EHLO reply listing `keywords` after the hostname and SIZE,
/// without the final CRLF.
fn encode_ehlo(identity: &ServerIdentity, keywords: &[&str], out: &mut Vec<u8>) {
    out.extend_from_slice(b"250-");
    out.extend_from_slice(identity.hostname.as_bytes());
    out.extend_from_slice(b"\r\n250-SIZE ");
    push_decimal(out, identity.max_message_size);
    for (i, keyword) in keywords.iter().enumerate() {
        let last = i + 1 == keywords.len();
        out.extend_from_slice(if last { b"\r\n250 " } else { b"\r\n250-" });
        out.extend_from_slice(keyword.as_bytes());
    }
}

impl Reply {
    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        match self {
            Reply::Fixed(line) => line
                .as_bytes()
                .iter()
                .take(3)
                .fold(0, |acc, &d| acc * 10 + u16::from(d.wrapping_sub(b'0'))),
            Reply::Greeting => 220,
            Reply::Ehlo | Reply::EhloStartTls | Reply::Helo | Reply::Queued(_) => 250,
            Reply::Closing(_) => 421,
        }
    }

    /// Appends the reply, each line ending in CRLF, to `out`.
    pub fn encode(&self, identity: &ServerIdentity, out: &mut Vec<u8>) {
        match *self {
            Reply::Fixed(line) => out.extend_from_slice(line.as_bytes()),
            Reply::Greeting => {
                out.extend_from_slice(b"220 ");
                out.extend_from_slice(identity.hostname.as_bytes());
                out.extend_from_slice(b" ESMTP bulkbench");
            }
            Reply::Helo => {
                out.extend_from_slice(b"250 ");
                out.extend_from_slice(identity.hostname.as_bytes());
            }
            Reply::Ehlo => encode_ehlo(identity, &EHLO_KEYWORDS, out),
            Reply::EhloStartTls => encode_ehlo(identity, &EHLO_KEYWORDS_STARTTLS, out),
            Reply::Queued(id) => {
                out.extend_from_slice(b"250 2.0.0 Ok: queued as ");
                push_hex16(out, id.0);
            }
            Reply::Closing(why) => {
                let (status, text) = why.status_and_text();
                out.extend_from_slice(b"421 ");
                out.extend_from_slice(status.as_bytes());
                out.push(b' ');
                out.extend_from_slice(identity.hostname.as_bytes());
                out.push(b' ');
                out.extend_from_slice(text.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The reply as text, CRLFs included (for logs and tests; the server uses [`encode`](Self::encode)).
    pub fn render(&self, identity: &ServerIdentity) -> String {
        let mut out = Vec::new();
        self.encode(identity, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Every fixed reply, by situation. The reply table of docs/protocol.md ("Replies") in code:
/// the codes and enhanced codes are fixed; the text is for people.
pub mod replies {
    use super::Reply;

    /// NOOP, RSET.
    pub const OK: Reply = Reply::Fixed("250 2.0.0 Ok");
    /// QUIT.
    pub const BYE: Reply = Reply::Fixed("221 2.0.0 Bye");
    /// MAIL FROM or BULK FROM accepted.
    pub const SENDER_OK: Reply = Reply::Fixed("250 2.1.0 Sender ok");
    /// RCPT accepted.
    pub const RCPT_OK: Reply = Reply::Fixed("250 2.1.5 Recipient ok");
    /// RCPT in a bulk transaction, the recipient opted out (or its domain is opt-in).
    pub const RCPT_OPTED_OUT: Reply = Reply::Fixed("550 5.7.1 Recipient does not accept bulk mail");
    /// RCPT, no such mailbox in a served domain.
    pub const RCPT_UNKNOWN: Reply = Reply::Fixed("550 5.1.1 Mailbox unknown");
    /// Harvest-resistant mode: unknown and opted-out mailboxes get the same answer.
    pub const RCPT_REFUSED: Reply = Reply::Fixed("550 5.7.1 Recipient refused");
    /// RCPT for a domain this server does not serve.
    pub const RCPT_NOT_LOCAL: Reply = Reply::Fixed("554 5.7.1 Relay access denied");
    /// RCPT `<Postmaster>` in a bulk transaction: postmaster takes no bulk mail.
    pub const POSTMASTER_NO_BULK: Reply =
        Reply::Fixed("550 5.7.1 Postmaster does not accept bulk mail");
    /// The policy backend failed or timed out: never guess a verdict.
    pub const RCPT_TEMPFAIL: Reply =
        Reply::Fixed("451 4.3.0 Recipient policy temporarily unavailable, try again later");
    /// RCPT beyond the recipient limit of a transaction.
    pub const TOO_MANY_RECIPIENTS: Reply = Reply::Fixed("452 4.5.3 Too many recipients");
    /// DATA accepted: send the message.
    pub const START_DATA: Reply = Reply::Fixed("354 End data with <CR><LF>.<CR><LF>");
    /// DATA with no accepted recipient.
    pub const NO_VALID_RECIPIENTS: Reply = Reply::Fixed("554 5.5.1 No valid recipients");
    /// A message, or a SIZE= declaration, over the size limit.
    pub const MESSAGE_TOO_BIG: Reply =
        Reply::Fixed("552 5.3.4 Message size exceeds fixed maximum message size");
    /// A message with a text line over 1,000 octets.
    pub const DATA_LINE_TOO_LONG: Reply =
        Reply::Fixed("550 5.6.0 Message contains a line longer than 1000 octets");
    /// A message with a CR or LF that is not part of a CRLF pair.
    pub const DATA_BARE_LINE_ENDING: Reply =
        Reply::Fixed("550 5.5.2 Message contains a bare CR or LF");
    /// The spool could not store the message: it was not accepted.
    pub const SPOOL_FAILED: Reply =
        Reply::Fixed("451 4.3.0 Local error in processing, message not accepted");
    /// A command line over 512 octets.
    pub const COMMAND_TOO_LONG: Reply = Reply::Fixed("500 5.5.2 Line too long");
    /// A command line ended by LF alone.
    pub const BARE_LF: Reply = Reply::Fixed("500 5.5.2 Command line must end with CRLF");
    /// An unknown verb.
    pub const UNKNOWN_COMMAND: Reply = Reply::Fixed("500 5.5.2 Command not recognized");
    /// NUL, control or 8-bit bytes in a command line.
    pub const BAD_BYTE: Reply =
        Reply::Fixed("500 5.5.2 Command contains a NUL, control or 8-bit byte");
    /// A verb RFC 5321 knows that this server does not offer.
    pub const NOT_IMPLEMENTED: Reply = Reply::Fixed("502 5.5.1 Command not implemented");
    /// EHLO/HELO without a name.
    pub const HELO_SYNTAX: Reply = Reply::Fixed("501 5.5.4 Syntax: EHLO hostname");
    /// MAIL/BULK without `FROM:<...>`.
    pub const MAIL_SYNTAX: Reply =
        Reply::Fixed("501 5.5.4 Syntax: MAIL FROM:<address> or BULK FROM:<address>");
    /// RCPT without `TO:<...>`.
    pub const RCPT_SYNTAX: Reply = Reply::Fixed("501 5.5.4 Syntax: RCPT TO:<address>");
    /// VRFY without an argument.
    pub const VRFY_SYNTAX: Reply = Reply::Fixed("501 5.5.4 Syntax: VRFY address");
    /// DATA, RSET or QUIT with an argument.
    pub const NO_ARGUMENTS: Reply =
        Reply::Fixed("501 5.5.4 Syntax: this command takes no arguments");
    /// A reverse-path that is not a valid path.
    pub const BAD_SENDER: Reply = Reply::Fixed("501 5.1.7 Bad sender address syntax");
    /// A forward-path that is not a valid path.
    pub const BAD_RECIPIENT: Reply = Reply::Fixed("501 5.1.3 Bad recipient address syntax");
    /// A reverse-path over RFC 5321's length limits.
    pub const SENDER_TOO_LONG: Reply = Reply::Fixed("501 5.1.7 Sender address too long");
    /// A forward-path over RFC 5321's length limits.
    pub const RECIPIENT_TOO_LONG: Reply = Reply::Fixed("501 5.1.3 Recipient address too long");
    /// An ESMTP parameter this server does not support.
    pub const UNKNOWN_PARAMETER: Reply = Reply::Fixed("555 5.5.4 Unsupported parameter");
    /// A known ESMTP parameter with a bad value, or given twice.
    pub const BAD_PARAMETER: Reply = Reply::Fixed("501 5.5.4 Bad parameter syntax or value");
    /// MAIL/BULK/RCPT before EHLO or HELO.
    pub const NEED_HELO: Reply = Reply::Fixed("503 5.5.1 Send EHLO or HELO first");
    /// BULK after HELO: the extension is only known to EHLO clients.
    pub const BULK_NEEDS_EHLO: Reply = Reply::Fixed("503 5.5.1 BULK requires EHLO");
    /// MAIL/BULK inside a transaction.
    pub const NESTED_MAIL: Reply = Reply::Fixed("503 5.5.1 Transaction already started");
    /// RCPT or DATA outside a transaction.
    pub const NEED_MAIL: Reply = Reply::Fixed("503 5.5.1 Send MAIL FROM or BULK FROM first");
    /// VRFY never reveals a mailbox or its preference.
    pub const VRFY: Reply =
        Reply::Fixed("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
    /// STARTTLS accepted: the TLS handshake follows (RFC 3207 section 4).
    pub const STARTTLS_READY: Reply = Reply::Fixed("220 2.0.0 Ready to start TLS");
    /// STARTTLS with parameters (RFC 3207 section 4 gives this text).
    pub const STARTTLS_SYNTAX: Reply =
        Reply::Fixed("501 5.5.4 Syntax error (no parameters allowed)");
    /// STARTTLS on a session already under TLS.
    pub const TLS_ALREADY_ACTIVE: Reply = Reply::Fixed("503 5.5.1 TLS already active");
    /// MAIL/BULK before STARTTLS on a server that requires TLS (RFC 3207 section 4).
    pub const MUST_STARTTLS: Reply = Reply::Fixed("530 5.7.0 Must issue a STARTTLS command first");
    /// HELP.
    pub const HELP: Reply =
        Reply::Fixed("214 2.0.0 Commands: EHLO HELO MAIL BULK RCPT DATA RSET NOOP QUIT VRFY HELP");
    /// HELP while STARTTLS is offered (as EHLO advertises it: TLS on and not yet active).
    pub const HELP_STARTTLS: Reply = Reply::Fixed(
        "214 2.0.0 Commands: EHLO HELO MAIL BULK RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_replies_encode_with_crlf_and_code() {
        let id = ServerIdentity::default();
        assert_eq!(replies::RCPT_OK.render(&id), "250 2.1.5 Recipient ok\r\n");
        assert_eq!(replies::RCPT_OPTED_OUT.code(), 550);
        assert_eq!(replies::RCPT_NOT_LOCAL.code(), 554);
        assert_eq!(replies::TOO_MANY_RECIPIENTS.code(), 452);
    }

    #[test]
    fn ehlo_advertises_bulk_and_the_size_limit() {
        let id = ServerIdentity {
            hostname: "mx.example".into(),
            max_message_size: 1234,
        };
        assert_eq!(
            Reply::Ehlo.render(&id),
            "250-mx.example\r\n250-SIZE 1234\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250 BULK\r\n"
        );
    }

    #[test]
    fn ehlo_offers_starttls_before_bulk_only_when_asked() {
        let id = ServerIdentity {
            hostname: "mx.example".into(),
            max_message_size: 1234,
        };
        assert_eq!(
            Reply::EhloStartTls.render(&id),
            "250-mx.example\r\n250-SIZE 1234\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 BULK\r\n"
        );
        assert_eq!(Reply::EhloStartTls.code(), 250);
        assert!(!Reply::Ehlo.render(&id).contains("STARTTLS"));
    }

    #[test]
    fn numbers_are_written_without_allocating_and_right() {
        for value in [0u64, 7, 10, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
            let mut hex = Vec::new();
            push_hex16(&mut hex, value);
            assert_eq!(hex, QueueId(value).to_string().as_bytes());
        }
    }

    #[test]
    fn dynamic_replies() {
        let id = ServerIdentity::default();
        assert_eq!(
            Reply::Greeting.render(&id),
            "220 localhost ESMTP bulkbench\r\n"
        );
        assert_eq!(
            Reply::Queued(QueueId(0xABC)).render(&id),
            "250 2.0.0 Ok: queued as 0000000000000ABC\r\n"
        );
        let closings = [
            (Closing::TooManyErrors, "421 4.7.0 localhost "),
            (Closing::IdleTimeout, "421 4.4.2 localhost "),
            (Closing::ShuttingDown, "421 4.3.2 localhost "),
            (Closing::TooManyConnections, "421 4.3.2 localhost "),
            (Closing::TooManyFromAddress, "421 4.7.0 localhost "),
            (Closing::LineTimeout, "421 4.4.2 localhost "),
            (Closing::DataTimeout, "421 4.4.2 localhost "),
        ];
        for (why, prefix) in closings {
            assert!(
                Reply::Closing(why).render(&id).starts_with(prefix),
                "{why:?}"
            );
        }
    }
}
