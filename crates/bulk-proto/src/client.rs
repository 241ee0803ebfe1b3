//! The client side: parsing server replies (RFC 5321 section 4.2, RFC 3463 enhanced codes).
//!
//! [`parse_reply`] takes the bytes received so far and returns one complete reply, possibly
//! multi-line, and how many bytes it used, or `None` when more bytes are needed. It never
//! allocates; a reply borrows from the buffer. It is lenient where servers differ in
//! practice (LF alone ends a line, a bare code line `250\r\n` is a reply) and strict where
//! leniency could hang a client: a line without an end past [`MAX_REPLY_LINE`] octets, or a
//! reply of more than [`MAX_REPLY_LINES`] lines, is an error.

/// Longest reply line accepted, CRLF included. RFC 5321 allows 512; real servers send
/// longer greetings, so this is lenient, and still bounds what a client buffers.
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines accepted in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 128;

/// An enhanced status code (RFC 3463), as `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    /// The subject, e.g. 7 in 5.7.1.
    pub subject: u16,
    /// The detail, e.g. 1 in 5.7.1.
    pub detail: u16,
}

impl std::fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerReply<'a> {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced code of the last line, if it starts with one matching the code's class.
    pub enhanced: Option<EnhancedCode>,
    /// The reply's raw bytes, every line with its line ending.
    pub raw: &'a [u8],
}

/// Why bytes are not a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line does not start with three digits (the first 2-5) and a separator.
    #[error("malformed reply line")]
    Malformed,
    /// The lines of a multi-line reply carry different codes.
    #[error("multi-line reply with differing codes")]
    MixedCodes,
    /// A line longer than [`MAX_REPLY_LINE`] without an end.
    #[error("reply line too long")]
    LineTooLong,
    /// A reply of more than [`MAX_REPLY_LINES`] lines.
    #[error("reply has too many lines")]
    TooManyLines,
}

impl<'a> ServerReply<'a> {
    /// The lines' texts after the code and separator, line endings removed.
    pub fn lines(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let raw = self.raw;
        raw.split_inclusive(|&b| b == b'\n').map(|line| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.get(4..).unwrap_or(&[])
        })
    }

    /// Whether an EHLO reply advertises `keyword` (case-insensitive; parameters after it
    /// allowed, as in `SIZE 1000`). The first line is the server's name, not a keyword.
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.lines().skip(1).any(|line| {
            let word = line.split(|&b| b == b' ').next().unwrap_or(&[]);
            word.eq_ignore_ascii_case(keyword.as_bytes())
        })
    }
}

/// Parses one reply at the start of `input`: `Ok(None)` if it is not complete yet.
pub fn parse_reply(input: &[u8]) -> Result<Option<(ServerReply<'_>, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    for _ in 0..MAX_REPLY_LINES {
        let rest = &input[pos..];
        let Some(lf) = memchr::memchr(b'\n', &rest[..rest.len().min(MAX_REPLY_LINE)]) else {
            return if rest.len() >= MAX_REPLY_LINE {
                Err(ReplyError::LineTooLong)
            } else {
                Ok(None)
            };
        };
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let this = line_code(line).ok_or(ReplyError::Malformed)?;
        if code.is_some_and(|c| c != this) {
            return Err(ReplyError::MixedCodes);
        }
        code = Some(this);
        pos += lf + 1;
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::Malformed),
        };
        if last {
            let text = line.get(4..).unwrap_or(&[]);
            let reply = ServerReply {
                code: this,
                enhanced: enhanced_code(this, text),
                raw: &input[..pos],
            };
            return Ok(Some((reply, pos)));
        }
    }
    Err(ReplyError::TooManyLines)
}

fn line_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |acc, &d| acc * 10 + u16::from(d - b'0')),
    )
}

/// `class.subject.detail` at the start of `text`, ended by a space or the line's end, if
/// its class matches the reply's: one digit, then one to three, then one to three.
///
/// Scanned byte by byte, with no iterator adaptors: a load generator parses one of these
/// per RCPT reply.
fn enhanced_code(code: u16, text: &[u8]) -> Option<EnhancedCode> {
    let (&class, rest) = text.split_first()?;
    if !class.is_ascii_digit() || u16::from(class - b'0') != code / 100 {
        return None;
    }
    let (subject, rest) = dotted_number(rest)?;
    let (detail, rest) = dotted_number(rest)?;
    if rest.first().is_some_and(|&b| b != b' ') {
        return None;
    }
    Some(EnhancedCode {
        class: class - b'0',
        subject,
        detail,
    })
}

/// A '.' then one to three digits at the start of `bytes`: the number and what follows.
fn dotted_number(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let digits = bytes.strip_prefix(b".")?;
    let len = digits
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if !(1..=3).contains(&len) {
        return None;
    }
    let value = digits[..len]
        .iter()
        .fold(0, |acc, &d| acc * 10 + u16::from(d - b'0'));
    Some((value, &digits[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{Reply, ServerIdentity, replies};

    fn code(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        Some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }

    #[test]
    fn table() {
        type Expected = Result<Option<(u16, Option<EnhancedCode>, usize)>, ReplyError>;
        let cases: Vec<(&[u8], Expected)> = vec![
            (
                b"250 2.1.5 Recipient ok\r\n",
                Ok(Some((250, code(2, 1, 5), 24))),
            ),
            (b"550 5.7.1 no\r\nRest", Ok(Some((550, code(5, 7, 1), 14)))),
            (b"250 ok\n", Ok(Some((250, None, 7)))),
            (b"250\r\n", Ok(Some((250, None, 5)))),
            (b"250-a\r\n250-b\r\n250 BULK\r\n", Ok(Some((250, None, 24)))),
            (
                b"421 4.7.0 host bye\r\n",
                Ok(Some((421, code(4, 7, 0), 20))),
            ),
            (b"550 4.7.1 class mismatch\r\n", Ok(Some((550, None, 26)))),
            (b"452 4.5.3.1 too many parts\r\n", Ok(Some((452, None, 28)))),
            (b"250 2.1.5\r\n", Ok(Some((250, code(2, 1, 5), 11)))),
            (b"250 2.001.999 x\r\n", Ok(Some((250, code(2, 1, 999), 17)))),
            (b"250 2.1\r\n", Ok(Some((250, None, 9)))),
            (b"250 2..5 x\r\n", Ok(Some((250, None, 12)))),
            (b"250 2.1234.5 x\r\n", Ok(Some((250, None, 16)))),
            (b"250 2.1.5x\r\n", Ok(Some((250, None, 12)))),
            (b"250 2.1.5\tx\r\n", Ok(Some((250, None, 13)))),
            (b"250 22.1.5 x\r\n", Ok(Some((250, None, 14)))),
            (b"250 .1.5 x\r\n", Ok(Some((250, None, 12)))),
            (b"250-a\r\n250", Ok(None)),
            (b"250 partial", Ok(None)),
            (b"", Ok(None)),
            (b"25 short\r\n", Err(ReplyError::Malformed)),
            (b"650 bad class\r\n", Err(ReplyError::Malformed)),
            (b"250x\r\n", Err(ReplyError::Malformed)),
            (b"HTTP/1.1 400\r\n", Err(ReplyError::Malformed)),
            (b"250-a\r\n251 b\r\n", Err(ReplyError::MixedCodes)),
        ];
        for (input, expected) in cases {
            let got = parse_reply(input).map(|r| r.map(|(r, n)| (r.code, r.enhanced, n)));
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
        }
        let long = vec![b'2'; MAX_REPLY_LINE + 1];
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(parse_reply(many.as_bytes()), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn every_server_reply_parses_back_to_its_code() {
        let id = ServerIdentity::default();
        let all = [
            Reply::Greeting,
            Reply::Ehlo,
            Reply::Helo,
            replies::RCPT_OK,
            replies::RCPT_OPTED_OUT,
            replies::RCPT_UNKNOWN,
            replies::RCPT_NOT_LOCAL,
            replies::RCPT_TEMPFAIL,
            replies::TOO_MANY_RECIPIENTS,
            replies::START_DATA,
            Reply::Closing(crate::reply::Closing::IdleTimeout),
        ];
        for reply in all {
            let mut bytes = Vec::new();
            reply.encode(&id, &mut bytes);
            let (parsed, used) = parse_reply(&bytes).unwrap().unwrap();
            assert_eq!(
                (parsed.code, used),
                (reply.code(), bytes.len()),
                "{reply:?}"
            );
        }
        let mut ehlo = Vec::new();
        Reply::Ehlo.encode(&id, &mut ehlo);
        let (parsed, _) = parse_reply(&ehlo).unwrap().unwrap();
        assert!(parsed.has_keyword("bulk"));
        assert!(parsed.has_keyword("SIZE"));
        assert!(parsed.has_keyword("PIPELINING"));
        assert!(
            !parsed.has_keyword("localhost"),
            "the first line is not a keyword"
        );
        let mut opted_out = Vec::new();
        replies::RCPT_OPTED_OUT.encode(&id, &mut opted_out);
        let (parsed, _) = parse_reply(&opted_out).unwrap().unwrap();
        assert_eq!(parsed.enhanced, code(5, 7, 1));
    }
}
