//! Synthetic message content: headers and body of the session's size, dot-stuffed, with
//! the end-of-data marker.

use std::fmt::Write as _;

use bulk_population::SessionSpec;

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

/// Appends the message of `spec` to `out`: headers, a body of text lines (at most 76
/// octets each) up to `spec.message_size` octets, dot-stuffed, then `.<CRLF>`. Deterministic:
/// the same spec gives the same bytes.
pub fn write_message(spec: &SessionSpec, out: &mut Vec<u8>) {
    let start = out.len();
    let mut header = String::with_capacity(256);
    let _ = write!(
        header,
        "From: <{sender}>\r\nTo: undisclosed-recipients:;\r\nSubject: bulkbench session {index}\r\n\
         Message-ID: <{index}.bulkbench@{domain}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        sender = spec.sender,
        index = spec.index,
        domain = spec
            .sender
            .rsplit('@')
            .next()
            .unwrap_or("bulkbench.invalid"),
    );
    out.extend_from_slice(header.as_bytes());
    let target = start + spec.message_size as usize;
    let mut word = spec.index as usize;
    while out.len() < target {
        let mut line_len = 0;
        while line_len < 70 && out.len() + line_len < target {
            let w = WORDS[word % WORDS.len()];
            word = word.wrapping_mul(31).wrapping_add(7);
            out.extend_from_slice(w.as_bytes());
            out.push(b' ');
            line_len += w.len() + 1;
        }
        // Some lines start with a dot so dot-stuffing is always exercised.
        if word % 11 == 0 {
            out.extend_from_slice(b"..");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}
