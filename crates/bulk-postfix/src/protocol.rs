//! The SMTPD access policy delegation protocol, sans-io: requests in, responses out.
//!
//! Postfix's `check_policy_service` sends a request as `name=value` lines, each ended by a
//! newline, and ends it with an empty line; the server answers `action=...` and an empty
//! line, and the connection carries the next request
//! (<https://www.postfix.org/SMTPD_POLICY_README.html>):
//!
//! ```text
//! request=smtpd_access_policy
//! protocol_state=RCPT
//! sender=news@shop.example
//! recipient=ann@example.org
//! client_address=192.0.2.7
//! ...
//! (empty line)
//! ```
//!
//! [`Decoder`] is fed the bytes as they arrive, in any pieces, and hands out each complete
//! [`Request`], whose attributes borrow from its buffer. It does no I/O and never panics.
//! What it accepts, and refuses as [`ProtocolError`] (after which the connection is
//! closed):
//!
//! - A line is `name=value`, split at its first `=`; the value may be empty and may hold
//!   `=`. A line ends at LF; one CR before it is dropped. The name is printable ASCII
//!   without spaces; the line is text: UTF-8 (Postfix passes SMTPUTF8 addresses as they
//!   are) without control bytes other than TAB.
//! - Limits, each a [`ProtocolError`] past it: [`MAX_LINE_LEN`] bytes per line,
//!   [`MAX_ATTRIBUTES`] attributes and [`MAX_REQUEST_LEN`] bytes per request (its empty
//!   line included; Postfix sends about 30 attributes, under 2 KiB). Both are checked as
//!   bytes arrive, so the buffer holds at most one request's limit beyond what was fed in
//!   one call, and a line is never scanned twice.
//! - An attribute named twice: the last value counts. Attributes this server does not use
//!   are ignored, as the protocol asks.

use std::fmt;

/// Longest line, its LF not counted.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Most attributes in one request.
pub const MAX_ATTRIBUTES: usize = 100;
/// Longest request, every line and the empty line ending it included.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// A request that breaks the protocol. Lines are numbered from 1 within their request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A line with no `=`.
    #[error("line {line}: no `=` (expected name=value)")]
    MissingEquals {
        /// Line number within the request.
        line: usize,
    },
    /// An attribute name that is empty or holds a space or a byte that is not printable
    /// ASCII.
    #[error("line {line}: the attribute name is empty or not printable ASCII")]
    BadName {
        /// Line number within the request.
        line: usize,
    },
    /// A line that is not UTF-8, or holds a control byte (TAB is allowed).
    #[error("line {line}: not text (a control byte, or bytes that are not UTF-8)")]
    NotText {
        /// Line number within the request.
        line: usize,
    },
    /// A line over [`MAX_LINE_LEN`] bytes.
    #[error("line {line}: longer than {MAX_LINE_LEN} bytes")]
    LineTooLong {
        /// Line number within the request.
        line: usize,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// A request over [`MAX_REQUEST_LEN`] bytes.
    #[error("longer than {MAX_REQUEST_LEN} bytes")]
    RequestTooLong,
    /// An empty line with no attribute before it.
    #[error("an empty request (an empty line before any attribute)")]
    EmptyRequest,
}

/// One complete request: its attribute lines, checked, borrowed from the [`Decoder`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The attribute lines, each ended by LF but the last; a CR before an LF may remain.
    text: &'a str,
}

impl<'a> Request<'a> {
    /// Every `(name, value)`, in the order sent.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.text.split('\n').filter_map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            line.split_once('=')
        })
    }

    /// The value of attribute `name` (the last one, if it was sent twice).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.attributes()
            .filter(|(n, _)| *n == name)
            .map(|(_, value)| value)
            .last()
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.attributes()).finish()
    }
}

/// Reads requests from a connection's bytes: [`feed`](Self::feed) what arrives, then take
/// every complete request with [`next_request`](Self::next_request) until it says `None`.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the request being read starts: the bytes before it were handed out.
    start: usize,
    /// Where the line being read starts: `buf[start..scanned]` are this request's checked
    /// lines.
    scanned: usize,
    /// Where the search for the line's end resumes: `buf[scanned..searched]` holds no LF.
    searched: usize,
    /// Attribute lines of this request so far.
    attributes: usize,
    /// Once a request is refused, the connection is done: every later call says so.
    failed: Option<ProtocolError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received, first dropping those of requests already handed out.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.searched -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held: at most [`MAX_REQUEST_LEN`] of an incomplete request, plus what the
    /// last [`feed`](Self::feed) brought beyond it.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete request, `None` when more bytes are needed, or the error that
    /// ends the connection (then every later call returns it too).
    pub fn next_request(&mut self) -> Result<Option<Request<'_>>, ProtocolError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.scan() {
            Ok(Some((begin, end))) => {
                self.attributes = 0;
                self.start = self.scanned;
                self.searched = self.scanned;
                // Every line was checked to be UTF-8, and LF is ASCII: this never fails.
                match std::str::from_utf8(&self.buf[begin..end]) {
                    Ok(text) => Ok(Some(Request { text })),
                    Err(_) => {
                        let error = ProtocolError::NotText { line: 1 };
                        self.failed = Some(error.clone());
                        Err(error)
                    }
                }
            }
            Ok(None) => Ok(None),
            Err(error) => Err(self.fail(error)),
        }
    }

    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        self.failed = Some(error.clone());
        error
    }

    /// Checks the lines that arrived since the last call; the span of the request's
    /// attribute text once its empty line is there.
    fn scan(&mut self) -> Result<Option<(usize, usize)>, ProtocolError> {
        loop {
            let line_start = self.scanned;
            let number = self.attributes + 1;
            let from = self.searched.max(line_start);
            let Some(found) = memchr::memchr(b'\n', &self.buf[from..]) else {
                self.searched = self.buf.len();
                if self.buf.len() - line_start > MAX_LINE_LEN {
                    return Err(ProtocolError::LineTooLong { line: number });
                }
                if self.buf.len() - self.start > MAX_REQUEST_LEN {
                    return Err(ProtocolError::RequestTooLong);
                }
                return Ok(None);
            };
            let length = from + found - line_start;
            if length > MAX_LINE_LEN {
                return Err(ProtocolError::LineTooLong { line: number });
            }
            self.scanned = line_start + length + 1;
            if self.scanned - self.start > MAX_REQUEST_LEN {
                return Err(ProtocolError::RequestTooLong);
            }
            let line = &self.buf[line_start..line_start + length];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.attributes == 0 {
                    return Err(ProtocolError::EmptyRequest);
                }
                // The text ends before the LF of its last attribute line.
                return Ok(Some((self.start, line_start - 1)));
            }
            check_line(line, number)?;
            self.attributes = number;
            if self.attributes > MAX_ATTRIBUTES {
                return Err(ProtocolError::TooManyAttributes);
            }
        }
    }
}

/// Checks one attribute line (without its line ending).
fn check_line(line: &[u8], number: usize) -> Result<(), ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotText { line: number })?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ProtocolError::NotText { line: number });
    }
    let (name, _) = text
        .split_once('=')
        .ok_or(ProtocolError::MissingEquals { line: number })?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProtocolError::BadName { line: number });
    }
    Ok(())
}

/// Appends the response to one request: `action=ACTION`, then the empty line.
pub fn encode_response(action: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"action=");
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Longest configured action text.
pub const MAX_ACTION_LEN: usize = 512;

/// Why an action text cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// Empty, or only spaces.
    #[error("the action is empty")]
    Empty,
    /// Holds a control byte: a newline would end the response early.
    #[error("the action holds a control character (a newline would end the response)")]
    ControlCharacter,
    /// Over [`MAX_ACTION_LEN`] bytes.
    #[error("the action is longer than {MAX_ACTION_LEN} bytes")]
    TooLong,
}

/// Checks an action given in configuration (`DEFER_IF_PERMIT 4.3.0 text`, `451 4.3.0
/// text`, `DUNNO`): one line of text that Postfix can read back. Its meaning is Postfix's
/// (access(5)); it is not checked here.
pub fn check_action(action: &str) -> Result<(), ActionError> {
    if action.trim().is_empty() {
        return Err(ActionError::Empty);
    }
    if action.chars().any(char::is_control) {
        return Err(ActionError::ControlCharacter);
    }
    if action.len() > MAX_ACTION_LEN {
        return Err(ActionError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every request the decoder hands out for `input` fed in pieces of `chunk` bytes,
    /// as owned attribute lists, and the error that ended it.
    fn decode(input: &[u8], chunk: usize) -> (Vec<Vec<(String, String)>>, Option<ProtocolError>) {
        let mut decoder = Decoder::new();
        let mut requests = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            decoder.feed(piece);
            loop {
                match decoder.next_request() {
                    Ok(Some(request)) => requests.push(
                        request
                            .attributes()
                            .map(|(n, v)| (n.to_owned(), v.to_owned()))
                            .collect(),
                    ),
                    Ok(None) => break,
                    Err(error) => return (requests, Some(error)),
                }
            }
        }
        (requests, None)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn requests_follow_each_other_on_one_connection() {
        let input = b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=\n\
                      recipient=ann@example.org\n\nrequest=smtpd_access_policy\r\n\
                      recipient=a=b@example.org\r\n\r\n";
        for chunk in [1, 2, 7, input.len()] {
            let (requests, error) = decode(input, chunk);
            assert_eq!(error, None, "chunk {chunk}");
            assert_eq!(
                requests,
                [
                    pairs(&[
                        ("request", "smtpd_access_policy"),
                        ("protocol_state", "RCPT"),
                        ("sender", ""),
                        ("recipient", "ann@example.org"),
                    ]),
                    pairs(&[
                        ("request", "smtpd_access_policy"),
                        ("recipient", "a=b@example.org"),
                    ]),
                ],
                "chunk {chunk}"
            );
        }
        // An incomplete request waits for its empty line.
        assert_eq!(decode(b"recipient=x@y\n", 1), (Vec::new(), None));
    }

    #[test]
    fn the_last_of_a_repeated_attribute_counts() {
        let mut decoder = Decoder::new();
        decoder.feed(b"recipient=a@x\nsender=s@y\nrecipient=b@x\n\n");
        let request = decoder.next_request().unwrap().unwrap();
        assert_eq!(request.get("recipient"), Some("b@x"));
        assert_eq!(request.get("sender"), Some("s@y"));
        assert_eq!(request.get("client_address"), None);
        assert_eq!(
            format!("{request:?}"),
            r#"{"recipient": "a@x", "sender": "s@y", "recipient": "b@x"}"#
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_their_line() {
        let long_line = format!("recipient={}\n\n", "a".repeat(MAX_LINE_LEN));
        let many = "a=b\n".repeat(MAX_ATTRIBUTES + 1) + "\n";
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (
                b"request=x\nno equals here\n\n".to_vec(),
                ProtocolError::MissingEquals { line: 2 },
            ),
            (b"=value\n\n".to_vec(), ProtocolError::BadName { line: 1 }),
            (
                b"my name=x\n\n".to_vec(),
                ProtocolError::BadName { line: 1 },
            ),
            (
                b"a=\xff\xfe\n\n".to_vec(),
                ProtocolError::NotText { line: 1 },
            ),
            (b"a=b\0c\n\n".to_vec(), ProtocolError::NotText { line: 1 }),
            (b"a=b\rc\n\n".to_vec(), ProtocolError::NotText { line: 1 }),
            (b"\n".to_vec(), ProtocolError::EmptyRequest),
            (
                long_line.into_bytes(),
                ProtocolError::LineTooLong { line: 1 },
            ),
            (many.into_bytes(), ProtocolError::TooManyAttributes),
        ];
        for (input, expected) in cases {
            for chunk in [1, 3, input.len()] {
                let (requests, error) = decode(&input, chunk);
                assert!(requests.is_empty());
                assert_eq!(error.as_ref(), Some(&expected), "{input:?}");
            }
        }
        // A line over the limit is refused before its end arrives.
        let mut decoder = Decoder::new();
        decoder.feed(&[b'a'; MAX_LINE_LEN + 1]);
        assert_eq!(
            decoder.next_request().unwrap_err(),
            ProtocolError::LineTooLong { line: 1 }
        );
        // And the decoder stays refused.
        decoder.feed(b"\n\n");
        assert!(decoder.next_request().is_err());
    }

    #[test]
    fn limits_are_inclusive() {
        // A line of exactly MAX_LINE_LEN bytes, and MAX_ATTRIBUTES attributes.
        let line = format!("v={}\n", "x".repeat(MAX_LINE_LEN - 2));
        assert_eq!(line.len(), MAX_LINE_LEN + 1);
        let (requests, error) = decode(format!("{line}\n").as_bytes(), 4096);
        assert_eq!((requests.len(), error), (1, None));
        let many = "a=b\n".repeat(MAX_ATTRIBUTES) + "\n";
        let (requests, error) = decode(many.as_bytes(), 10);
        assert_eq!((requests.len(), error), (1, None));

        // A request of exactly MAX_REQUEST_LEN bytes, empty line included, and one over.
        let request_of = |len: usize| {
            let mut text = String::new();
            for i in 0..9 {
                text.push_str(&format!("a{i}={}\n", "x".repeat(7000)));
            }
            let rest = len - text.len() - "z=\n\n".len();
            text.push_str(&format!("z={}\n\n", "y".repeat(rest)));
            assert_eq!(text.len(), len);
            text
        };
        let (requests, error) = decode(request_of(MAX_REQUEST_LEN).as_bytes(), 1000);
        assert_eq!((requests.len(), error), (1, None));
        let (requests, error) = decode(request_of(MAX_REQUEST_LEN + 1).as_bytes(), 1000);
        assert_eq!(
            (requests.len(), error),
            (0, Some(ProtocolError::RequestTooLong))
        );
    }

    #[test]
    fn responses_and_actions() {
        let mut out = Vec::new();
        encode_response("DUNNO", &mut out);
        encode_response("550 5.7.1 No", &mut out);
        assert_eq!(out, b"action=DUNNO\n\naction=550 5.7.1 No\n\n");
        assert_eq!(check_action("DEFER_IF_PERMIT 4.3.0 Try later"), Ok(()));
        assert_eq!(check_action(" "), Err(ActionError::Empty));
        assert_eq!(
            check_action("DUNNO\naction=OK"),
            Err(ActionError::ControlCharacter)
        );
        assert_eq!(
            check_action(&"x".repeat(MAX_ACTION_LEN + 1)),
            Err(ActionError::TooLong)
        );
    }

    /// Attribute names as Postfix writes them, values as any text without line breaks
    /// (`=` included).
    fn attribute() -> impl Strategy<Value = (String, String)> {
        ("[a-z_]{1,20}", "[^\\p{Cc}]{0,40}")
    }

    proptest! {
        /// Requests round-trip through any split of their bytes, with LF or CRLF endings.
        #[test]
        fn requests_round_trip_under_any_split(
            requests in prop::collection::vec(prop::collection::vec(attribute(), 1..12), 1..5),
            crlf in any::<bool>(),
            chunk in 1usize..64,
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut input = String::new();
            for request in &requests {
                for (name, value) in request {
                    input.push_str(&format!("{name}={value}{end}"));
                }
                input.push_str(end);
            }
            let (decoded, error) = decode(input.as_bytes(), chunk);
            prop_assert_eq!(error, None);
            prop_assert_eq!(decoded, requests);
        }

        /// Fuzz-style: any bytes, biased to the protocol's own, in any pieces.
        #[test]
        fn any_bytes_never_panic_and_stay_bounded(
            input in prop::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..512,
        ) {
            check_stream(&biased(&input), chunk);
        }
    }

    /// Maps random bytes to a mix that reaches the protocol's states: about half are
    /// newlines, `=`, CRs and letters, the rest any byte.
    fn biased(random: &[u8]) -> Vec<u8> {
        random
            .iter()
            .map(|&b| match b % 16 {
                0..=2 => b'\n',
                3..=4 => b'=',
                5 => b'\r',
                6..=8 => b'a' + b / 16,
                _ => b,
            })
            .collect()
    }

    /// Feeds `input` in pieces of `chunk` bytes: the decoder never panics, holds no more
    /// than a request's limit beyond one piece, and hands out only requests whose
    /// attributes are well formed. Returns how many it handed out, and whether it refused
    /// the stream.
    fn check_stream(input: &[u8], chunk: usize) -> (usize, bool) {
        let mut decoder = Decoder::new();
        let mut requests = 0;
        for piece in input.chunks(chunk) {
            decoder.feed(piece);
            assert!(decoder.buffered() <= MAX_REQUEST_LEN + piece.len());
            loop {
                match decoder.next_request() {
                    Ok(Some(request)) => {
                        requests += 1;
                        let attributes: Vec<_> = request.attributes().collect();
                        assert!(!attributes.is_empty() && attributes.len() <= MAX_ATTRIBUTES);
                        for (name, value) in attributes {
                            assert!(!name.is_empty() && !name.contains(['=', ' ']));
                            assert!(!value.contains(|c: char| c.is_control() && c != '\t'));
                        }
                    }
                    Ok(None) => break,
                    // The server closes the connection here.
                    Err(_) => return (requests, true),
                }
            }
        }
        (requests, false)
    }

    /// Requests made of `random`: attribute lines of random names and values, an empty
    /// line after about one in eight, and one line in 400 with a byte replaced by a random
    /// one.
    fn requests_from(random: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(random.len() * 2);
        for draw in random.chunks_exact(4) {
            let line_start = out.len();
            let name_len = 1 + usize::from(draw[0] % 12);
            let value_len = usize::from(draw[1] % 40);
            out.extend((0..name_len).map(|k| b'a' + (draw[2].wrapping_add(k as u8) % 26)));
            out.push(b'=');
            out.extend((0..value_len).map(|k| b' ' + (draw[3].wrapping_mul(k as u8 + 1) % 95)));
            out.push(b'\n');
            // One line in 400 gets a random byte somewhere.
            if u16::from_le_bytes([draw[1], draw[2]]) < 164 {
                let at = line_start + usize::from(draw[3]) * (out.len() - line_start) / 256;
                out[at] = draw[0];
            }
            if draw[0] % 8 == 0 {
                out.push(b'\n');
            }
        }
        out
    }

    /// Fuzz-style at scale: long seeded random streams, past every limit, in pieces of
    /// every size from 1 byte to 16 KiB.
    #[test]
    fn random_streams_never_panic_and_stay_bounded() {
        use bulk_population::seeding::mix;
        let (mut requests, mut refused) = (0, 0);
        for case in 0..200u64 {
            let length = (mix(15, 1, case) % (96 * 1024)) as usize;
            let random: Vec<u8> = (0..length.div_ceil(8) as u64)
                .flat_map(|i| mix(15, 2 + case, i).to_le_bytes())
                .take(length)
                .collect();
            // Raw bytes, biased bytes, and requests of random attributes with a byte
            // corrupted now and then.
            let input = match case % 3 {
                0 => random,
                1 => biased(&random),
                _ => requests_from(&random),
            };
            let chunk = 1 + (mix(15, 0, case) % (16 * 1024)) as usize;
            let (handed_out, was_refused) = check_stream(&input, chunk);
            requests += handed_out;
            refused += usize::from(was_refused);
        }
        // The streams reach both ends: requests handed out, and streams refused.
        assert!(
            requests > 100 && refused > 100,
            "{requests} requests, {refused} refused"
        );
    }

    /// A stream without line ends, or of lines without an empty one, is refused once
    /// past the limits: memory stays bounded however much a client sends.
    #[test]
    fn endless_input_is_refused_at_the_limits() {
        for (piece, expected) in [
            (
                &b"xxxxxxxxxxxxxxxx"[..],
                ProtocolError::LineTooLong { line: 1 },
            ),
            (&b"a=bbbbbbbbbbbbb\n"[..], ProtocolError::TooManyAttributes),
        ] {
            let mut decoder = Decoder::new();
            let mut refused = None;
            for _ in 0..(1 << 16) {
                decoder.feed(piece);
                assert!(decoder.buffered() <= MAX_REQUEST_LEN + piece.len());
                if let Err(error) = decoder.next_request() {
                    refused = Some(error);
                    break;
                }
            }
            assert_eq!(refused, Some(expected));
        }
    }
}
