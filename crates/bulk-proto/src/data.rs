//! Message content after `354`: dot-unstuffing, the end-of-data marker, and the checks
//! that decide the reply at the end of the message.
//!
//! Only `<CRLF>.<CRLF>` ends a message (RFC 5321 section 4.1.1.4). A bare LF or bare CR never
//! ends a line here, so `\n.\n` or `\r\n.\n` cannot end a message early and a command cannot
//! be smuggled inside one; a message that contains either is refused at its end.

use memchr::memchr2;

use crate::limits::MAX_TEXT_LINE;
use crate::reply::{Reply, replies};

/// Where the receiver stands between two input bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or right after the 354).
    LineStart,
    /// Read `.` at the start of a line: either dot-stuffing or the end marker.
    Dot,
    /// Read `.<CR>` at the start of a line: LF now ends the message.
    DotCr,
    /// Inside a line.
    Mid,
    /// Read a CR inside a line: LF completes the line, anything else makes it bare.
    Cr,
}

/// Receives one message's content, chunk by chunk, as it arrives.
#[derive(Clone, Debug)]
pub struct DataReceiver {
    state: State,
    /// Octets of the current line on the wire so far, the stuffing dot included.
    line_len: usize,
    /// Octets of content after unstuffing, CRLFs included.
    size: u64,
    max_size: u64,
    bare_line_ending: bool,
    long_line: bool,
}

/// What a message that has ended is answered with, unless it is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataVerdict {
    /// Nothing wrong: hand the message to the sink.
    Deliver,
    /// Refused with this reply.
    Refuse(Reply),
}

impl DataReceiver {
    /// A receiver for one message of at most `max_size` octets.
    pub fn new(max_size: u64) -> Self {
        DataReceiver {
            state: State::LineStart,
            line_len: 0,
            size: 0,
            max_size,
            bare_line_ending: false,
            long_line: false,
        }
    }

    /// Consumes content from `input`, appending the unstuffed content to `body` while the
    /// message is within its size limit (pass `None` to only count it). Returns how many
    /// bytes were consumed and whether the end-of-data marker was among them; bytes after the
    /// marker are not consumed (with PIPELINING, commands may follow in the same read).
    pub fn feed(&mut self, input: &[u8], mut body: Option<&mut Vec<u8>>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Mid => {
                    let rest = &input[i..];
                    match memchr2(b'\r', b'\n', rest) {
                        None => {
                            self.content(rest, body.as_deref_mut());
                            i = input.len();
                        }
                        Some(at) => {
                            self.content(&rest[..at], body.as_deref_mut());
                            i += at + 1;
                            if rest[at] == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.bare_line_ending = true;
                                self.content(b"\n", body.as_deref_mut());
                            }
                        }
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.line_len += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // Dot-stuffing: the leading dot is dropped, the rest is content.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::LineStart;
                        return (i + 1, true);
                    }
                    // ".\r" then not LF: the CR is bare.
                    self.bare_line_ending = true;
                    self.content(b"\r", body.as_deref_mut());
                    self.state = State::Mid;
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.content(b"\r\n", body.as_deref_mut());
                        if self.line_len > MAX_TEXT_LINE {
                            self.long_line = true;
                        }
                        self.line_len = 0;
                        self.state = State::LineStart;
                    } else {
                        self.bare_line_ending = true;
                        self.content(b"\r", body.as_deref_mut());
                        self.state = State::Mid;
                    }
                }
            }
        }
        (i, false)
    }

    fn content(&mut self, bytes: &[u8], body: Option<&mut Vec<u8>>) {
        self.line_len += bytes.len();
        self.size += bytes.len() as u64;
        if let Some(body) = body
            && self.size <= self.max_size
        {
            body.extend_from_slice(bytes);
        }
    }

    /// Octets of content received so far, after unstuffing.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The answer to a message that has ended. A bare line ending is reported first: it is
    /// the one that can hide a smuggling attempt.
    pub fn verdict(&self) -> DataVerdict {
        if self.bare_line_ending {
            DataVerdict::Refuse(replies::DATA_BARE_LINE_ENDING)
        } else if self.size > self.max_size {
            DataVerdict::Refuse(replies::MESSAGE_TOO_BIG)
        } else if self.long_line {
            DataVerdict::Refuse(replies::DATA_LINE_TOO_LONG)
        } else {
            DataVerdict::Deliver
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes; returns (consumed, ended, body, verdict).
    fn receive(input: &[u8], chunk: usize, max: u64) -> (usize, bool, Vec<u8>, DataVerdict) {
        let mut rx = DataReceiver::new(max);
        let mut body = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(chunk) {
            let (n, ended) = rx.feed(piece, Some(&mut body));
            consumed += n;
            if ended {
                return (consumed, true, body, rx.verdict());
            }
            assert_eq!(
                n,
                piece.len(),
                "a chunk without the marker is consumed whole"
            );
        }
        (consumed, false, body, rx.verdict())
    }

    #[test]
    fn table() {
        use DataVerdict::*;
        let long = format!("{}\r\n.\r\n", "x".repeat(999));
        let just_fits = format!("{}\r\n.\r\n", "x".repeat(998));
        // (input, None if it must not end, or Some((body, verdict)))
        type Case<'a> = (&'a [u8], Option<(&'a [u8], DataVerdict)>);
        let cases: Vec<Case<'_>> = vec![
            (b".\r\n", Some((b"", Deliver))),
            (
                b"Subject: hi\r\n\r\nbody\r\n.\r\n",
                Some((b"Subject: hi\r\n\r\nbody\r\n", Deliver)),
            ),
            (
                b"..leading dot\r\n.\r\n",
                Some((b".leading dot\r\n", Deliver)),
            ),
            (b".x\r\n.\r\n", Some((b"x\r\n", Deliver))),
            (b"a\r\n..\r\n.\r\n", Some((b"a\r\n.\r\n", Deliver))),
            // Bare LF never ends a line, so these never end the message.
            (b"a\n.\nQUIT\n", None),
            (b"a\r\n.\nRSET\r\n", None),
            (b"a\n.\r\n", None),
            (
                b"a\nb\r\n.\r\n",
                Some((b"a\nb\r\n", Refuse(replies::DATA_BARE_LINE_ENDING))),
            ),
            (
                b"a\rb\r\n.\r\n",
                Some((b"a\rb\r\n", Refuse(replies::DATA_BARE_LINE_ENDING))),
            ),
            (
                b"a\r\r\n.\r\n",
                Some((b"a\r\r\n", Refuse(replies::DATA_BARE_LINE_ENDING))),
            ),
            (
                b".\rx\r\n.\r\n",
                Some((b"\rx\r\n", Refuse(replies::DATA_BARE_LINE_ENDING))),
            ),
            (
                long.as_bytes(),
                Some((
                    &long.as_bytes()[..1001],
                    Refuse(replies::DATA_LINE_TOO_LONG),
                )),
            ),
            (
                just_fits.as_bytes(),
                Some((&just_fits.as_bytes()[..1000], Deliver)),
            ),
        ];
        for (input, expected) in cases {
            for chunk in [1, 2, 3, 7, input.len().max(1)] {
                let (consumed, ended, body, verdict) = receive(input, chunk, 1 << 20);
                let shown = String::from_utf8_lossy(input);
                match expected {
                    Some((want_body, want_verdict)) => {
                        assert!(ended, "{shown:?} chunk {chunk} should end");
                        assert_eq!(consumed, input.len(), "{shown:?}");
                        assert_eq!(body, want_body, "{shown:?} chunk {chunk}");
                        assert_eq!(verdict, want_verdict, "{shown:?} chunk {chunk}");
                    }
                    None => assert!(!ended, "{shown:?} chunk {chunk} must not end"),
                }
            }
        }
    }

    #[test]
    fn bytes_after_the_marker_are_left_for_the_session() {
        let mut rx = DataReceiver::new(100);
        let input = b"hi\r\n.\r\nQUIT\r\n";
        let (n, ended) = rx.feed(input, None);
        assert!(ended);
        assert_eq!(&input[n..], b"QUIT\r\n");
    }

    #[test]
    fn over_size_is_counted_not_stored() {
        let mut rx = DataReceiver::new(10);
        let mut body = Vec::new();
        let (_, ended) = rx.feed(b"0123456789abcdef\r\n.\r\n", Some(&mut body));
        assert!(ended);
        assert_eq!(rx.size(), 18);
        assert!(body.len() <= 10);
        assert_eq!(rx.verdict(), DataVerdict::Refuse(replies::MESSAGE_TOO_BIG));
    }
}
