//! Synthetic message content: headers and body of the session's size, dot-stuffed, with
//! the end-of-data marker.
//!
//! The body is cut from a pool of text lines built once per process (the same lines in
//! every process), so writing a message is a few copies of whole lines instead of a loop
//! over words: a load generator writes one message per session, and at thousands of
//! sessions per second the cost shows in its CPU per RCPT.

use std::io::Write as _;
use std::sync::OnceLock;

use bulk_population::Transaction;

/// Words for body text: plain ASCII, so the content is valid for any server.
const WORDS: [&str; 16] = [
    "offer",
    "news",
    "weekly",
    "update",
    "your",
    "account",
    "summer",
    "sale",
    "members",
    "event",
    "invitation",
    "report",
    "product",
    "launch",
    "today",
    "thanks",
];

/// Lines in the pool; a message starts at a line chosen by its session index.
const POOL_LINES: usize = 1024;
/// Longest text of a pool line, stuffing dot included, CRLF excluded (RFC 5322 asks for
/// at most 78).
pub const MAX_LINE: usize = 76;
/// A line with this remainder (modulo 11) starts with a dot, sent stuffed as `..`, so
/// every message of more than a few lines exercises dot-stuffing.
const DOT_LINE: usize = 5;
/// What a message's last, partial line is cut from: no leading dot, so no cut of it can
/// be a lone `.`.
const FILLER: &[u8] =
    b"thanks for reading this bulkbench message, and have a good day from all the team";
const _: () = assert!(FILLER.len() >= MAX_LINE - 2);

/// The pool: lines with their CRLF, back to back, and where each starts (plus the end).
struct Pool {
    text: Vec<u8>,
    starts: Vec<usize>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut text = Vec::with_capacity(POOL_LINES * (MAX_LINE + 2));
        let mut starts = Vec::with_capacity(POOL_LINES + 1);
        let mut word = 0usize;
        for line in 0..POOL_LINES {
            starts.push(text.len());
            let line_start = text.len();
            if line % 11 == DOT_LINE {
                text.extend_from_slice(b"..");
            }
            loop {
                let w = WORDS[word % WORDS.len()];
                if text.len() - line_start + w.len() + 1 > MAX_LINE {
                    break;
                }
                word = word.wrapping_mul(31).wrapping_add(7);
                text.extend_from_slice(w.as_bytes());
                text.push(b' ');
            }
            text.extend_from_slice(b"\r\n");
        }
        starts.push(text.len());
        Pool { text, starts }
    })
}

/// Appends the message of transaction number `number` of session `session` to `out`:
/// headers, then a body of text lines (at most [`MAX_LINE`] octets each) up to
/// `transaction.message_size` octets in all, dot-stuffed, then `.<CRLF>`. The message
/// before the final `.<CRLF>` is `message_size` octets long, or one less (a line cannot be
/// a single octet), or just the headers if they are longer. Deterministic: the same
/// arguments give the same bytes.
pub fn write_message(session: u64, number: usize, transaction: &Transaction, out: &mut Vec<u8>) {
    let start = out.len();
    let domain = transaction
        .sender
        .rsplit('@')
        .next()
        .unwrap_or("bulkbench.invalid");
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "From: <{sender}>\r\nTo: undisclosed-recipients:;\r\n\
         Subject: bulkbench session {session} message {number}\r\n\
         Message-ID: <{session}.{number}.bulkbench@{domain}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        sender = transaction.sender,
    );
    let target = start + transaction.message_size as usize;
    let pool = pool();
    let mut line = (session as usize)
        .wrapping_mul(7919)
        .wrapping_add(number.wrapping_mul(31))
        % POOL_LINES;
    // Whole lines, as many at a time as fit before the pool's end.
    while out.len() < target {
        let want_end = pool.starts[line] + (target - out.len());
        // The last whole line that still fits: every line before `fit` ends by `want_end`.
        let fit = pool.starts[line + 1..].partition_point(|&end| end <= want_end) + line;
        if fit == line {
            break;
        }
        out.extend_from_slice(&pool.text[pool.starts[line]..pool.starts[fit]]);
        line = fit % POOL_LINES;
    }
    // The rest, shorter than the next line: a cut of the filler line.
    let rest = target.saturating_sub(out.len());
    if rest >= 2 {
        out.extend_from_slice(&FILLER[..(rest - 2).min(FILLER.len())]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use bulk_population::{Kind, Transaction};
    use bulk_proto::{DataReceiver, DataVerdict};

    use super::*;

    fn transaction(message_size: u32) -> Transaction {
        Transaction {
            kind: Kind::Bulk,
            sender: "news@shop.example".to_owned(),
            recipients: Vec::new(),
            message_size,
        }
    }

    #[test]
    fn messages_have_their_size_valid_lines_and_one_end() {
        let mut stuffed_seen = false;
        for index in [0, 1, 2, 77, 1023, 1024, 40_000, u64::from(u32::MAX)] {
            for size in (0..3_000).step_by(7).chain([5_000, 64_000, 300_000]) {
                let mut out = Vec::new();
                write_message(index, 0, &transaction(size), &mut out);
                let message = out.strip_suffix(b".\r\n").expect("ends with the marker");
                let header_end = message
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .expect("a header")
                    + 4;
                let size = size as usize;
                if size >= header_end {
                    assert!(
                        message.len() == size || message.len() + 1 == size,
                        "index {index}: {} octets for size {size}",
                        message.len()
                    );
                } else {
                    assert_eq!(message.len(), header_end, "headers only");
                }
                for line in message.split_inclusive(|&b| b == b'\n') {
                    let text = line.strip_suffix(b"\r\n").expect("CRLF line ends");
                    assert!(text.len() <= MAX_LINE, "{}", String::from_utf8_lossy(text));
                    assert!(!text.contains(&b'\r'), "no bare CR");
                    assert_ne!(text, b".", "no line ends the data early");
                    if text.starts_with(b".") {
                        assert!(text.starts_with(b".."), "a leading dot is stuffed");
                        stuffed_seen = true;
                    }
                }
                // A real receiver finds the end exactly at the marker.
                let mut receiver = DataReceiver::new(u64::MAX);
                let mut body = Vec::new();
                assert_eq!(receiver.feed(&out, Some(&mut body)), (out.len(), true));
                assert_eq!(receiver.verdict(), DataVerdict::Deliver);
                let stuffed = message
                    .split_inclusive(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b".."))
                    .count();
                assert_eq!(body.len(), message.len() - stuffed);
            }
        }
        assert!(stuffed_seen, "dot-stuffing is exercised");
    }

    #[test]
    fn the_same_arguments_give_the_same_bytes_and_messages_differ() {
        let write = |index, number, size| {
            let mut out = b"kept".to_vec();
            write_message(index, number, &transaction(size), &mut out);
            out
        };
        assert_eq!(write(9, 0, 4_000), write(9, 0, 4_000));
        assert!(write(9, 0, 4_000).starts_with(b"kept"), "appends");
        let body = |bytes: Vec<u8>| bytes[bytes.len() - 2_000..].to_vec();
        assert_ne!(body(write(9, 0, 4_000)), body(write(10, 0, 4_000)));
        // The messages of one session's transactions differ too.
        assert_ne!(body(write(9, 0, 4_000)), body(write(9, 1, 4_000)));
    }
}
