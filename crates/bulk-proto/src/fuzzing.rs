//! Fuzz bodies, shared by the cargo-fuzz targets in `fuzz/` and by `cargo test`, which replays
//! the committed seed corpus through them (`tests/fuzz_corpus.rs`) so the targets never rot.
//!
//! Each body takes arbitrary bytes and panics when an invariant breaks: a fuzz body reports
//! by panicking, so `assert!` is the right tool here and nowhere else in this crate. Not part
//! of the API: hidden from the docs, free to change with the fuzz targets.
//!
//! - [`command_line`]: [`parse_command`] never panics, its fast RCPT path agrees with the
//!   full grammar, and [`Command::encode`] is canonical.
//! - [`data_receiver`]: [`DataReceiver`] does not depend on how its input is split, and
//!   agrees with a slow reference reading of RFC 5321 section 4.1.1.4.
//! - [`session`]: [`Session`] always makes progress, writes well-formed replies, and answers
//!   the same whatever the split of its input.

use bulk_types::Verdict;

use crate::command::{
    Command, CommandError, ForwardPath, ReversePath, TransactionKind, parse_command,
    parse_command_general, rcpt_fast,
};
use crate::data::{DataReceiver, DataVerdict};
use crate::limits::{self, MAX_COMMAND_LINE, MAX_PATH, MAX_TEXT_LINE};
use crate::reply::{Closing, QueueId, ServerIdentity, replies};
use crate::session::{Event, HarvestConfig, Session, SessionConfig, TlsPolicy};

/// Fuzzes one command line, given without its CRLF. Asserts that:
///
/// - [`parse_command`] never panics, and refuses any line with a control or 8-bit byte as
///   [`CommandError::BadByte`];
/// - its fast path of the common RCPT agrees with the full grammar ([`fast_rcpt_agrees`]);
/// - the verb is case-insensitive: upper- or lower-casing the first four bytes gives the
///   same result;
/// - an accepted command borrows its domain or mailbox from the line (no copy), and a
///   mailbox fits [`MAX_PATH`] with its brackets;
/// - encoding is canonical: `encode(c)` is one line ending in its only CRLF, it parses back
///   to exactly `c`, and re-encoding that is byte-identical, i.e.
///   `encode(parse(encode(parse(x)))) == encode(parse(x))`. The input line itself is not
///   compared: parsing drops by design the verb's case, source routes, NOOP/HELP/VRFY
///   arguments and extra spaces;
/// - a MAIL, BULK or RCPT command encodes within [`MAX_COMMAND_LINE`], so a client built on
///   `encode` never sends a line this server refuses as too long.
pub fn command_line(data: &[u8]) {
    let parsed = parse_command(data);
    fast_rcpt_agrees(data);
    if data.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        assert_eq!(parsed, Err(CommandError::BadByte), "{}", show(data));
    }
    if data.len() >= 4 {
        for upper in [true, false] {
            let mut recased = data.to_vec();
            if upper {
                recased[..4].make_ascii_uppercase();
            } else {
                recased[..4].make_ascii_lowercase();
            }
            assert_eq!(parse_command(&recased), parsed, "verb case: {}", show(data));
        }
    }
    let Ok(command) = parsed else {
        return;
    };
    match command {
        Command::Ehlo { domain } | Command::Helo { domain } => {
            assert!(borrows_from(data, domain), "{}", show(data));
            assert!(!domain.is_empty(), "{}", show(data));
            assert!(domain.first() != Some(&b' ') && domain.last() != Some(&b' '));
        }
        Command::Mail {
            from: ReversePath::Mailbox(mailbox),
            ..
        }
        | Command::Rcpt {
            to: ForwardPath::Mailbox(mailbox),
        } => {
            assert!(borrows_from(data, mailbox), "{}", show(data));
            assert!(mailbox.contains(&b'@'), "{}", show(data));
            assert!(mailbox.len() + 2 <= MAX_PATH, "{}", show(data));
        }
        _ => {}
    }

    let mut line = Vec::new();
    command.encode(&mut line);
    let Some(text) = line.strip_suffix(b"\r\n") else {
        panic!("encoding of {command:?} does not end in CRLF");
    };
    assert!(
        !text.contains(&b'\r') && !text.contains(&b'\n'),
        "encoding of {command:?} has a CR or LF inside: {}",
        show(&line)
    );
    if matches!(command, Command::Mail { .. } | Command::Rcpt { .. }) {
        assert!(line.len() <= MAX_COMMAND_LINE, "{}", show(&line));
    }
    let reparsed = parse_command(text);
    assert_eq!(reparsed, Ok(command), "encoded as {}", show(&line));
    let mut again = Vec::new();
    if let Ok(reparsed) = reparsed {
        reparsed.encode(&mut again);
    }
    assert_eq!(again, line, "re-encoding is not stable");
}

/// The fast path of the common RCPT agrees with the full grammar: [`parse_command`] gives
/// what the general parser gives on `line`, and a path the fast path takes (also the one at
/// the start of a buffer, as the session uses it, `line` then being longer than the path)
/// is the general parser's RCPT of the same mailbox, borrowed from the same place; a
/// mailbox it marks normal holds no upper-case letter and no `+`.
pub fn fast_rcpt_agrees(line: &[u8]) {
    let general = parse_command_general(line);
    assert_eq!(parse_command(line), general, "{}", show(line));
    if let Some(fast) = rcpt_fast(line) {
        let (mailbox, end) = (fast.mailbox, fast.end);
        assert!(
            !fast.normal || !mailbox.iter().any(|&b| b.is_ascii_uppercase() || b == b'+'),
            "marked normal: {}",
            show(mailbox)
        );
        assert_eq!(
            parse_command_general(&line[..end]),
            Ok(Command::Rcpt {
                to: ForwardPath::Mailbox(mailbox)
            }),
            "fast path took {}",
            show(&line[..end])
        );
        assert!(
            std::ptr::eq(mailbox.as_ptr(), line[9..].as_ptr()),
            "{}",
            show(line)
        );
    }
}

/// Size limits [`data_receiver`] picks from, by three bits of its first byte.
const DATA_MAX_SIZES: [u64; 8] = [
    u64::MAX,
    0,
    1,
    10,
    100,
    1000,
    1 << 20,
    limits::DEFAULT_MAX_MESSAGE_SIZE,
];

/// Fuzzes [`DataReceiver`]. The first byte is a header: its low three bits say how many of
/// the next bytes are chunk lengths (each `b % 33`, cycled; none means one byte at a time,
/// and a 0 feeds an empty slice), bits 3 to 5 pick the size limit from `DATA_MAX_SIZES`.
/// The rest is the content after `354`. Asserts that:
///
/// - `feed` never consumes more than it was given, and consumes a whole chunk unless the
///   end-of-data marker is in it;
/// - fed in chunks or in one piece, the receiver consumes the same count, ends or not alike,
///   counts the same size and gives the same verdict; the bodies are equal while the size is
///   within the limit, and beyond it each body is a prefix of the content of at most the
///   limit (storing stops at the limit, at a point that depends on the chunks);
/// - counting only (`body: None`) changes nothing but the body;
/// - all of it agrees with a slow reference: the message ends at the first line (split at
///   CRLF only) that is exactly `.`, lines starting with `.` lose it, and the verdict is a
///   bare CR or LF first, then the size, then a line over [`MAX_TEXT_LINE`] octets.
pub fn data_receiver(data: &[u8]) {
    let Some((&header, rest)) = data.split_first() else {
        return;
    };
    let max_size = DATA_MAX_SIZES[usize::from((header >> 3) & 0x07)];
    let (lens, input) = rest.split_at(usize::from(header & 0x07).min(rest.len()));
    let mut lens: Vec<usize> = lens.iter().map(|&b| usize::from(b % 33)).collect();
    if lens.iter().all(|&len| len == 0) {
        lens.push(1);
    }

    let whole = receive(input, &[input.len()], max_size, true);
    let chunked = receive(input, &lens, max_size, true);
    let counted = receive(input, &lens, max_size, false);
    let unlimited = receive(input, &[input.len()], u64::MAX, true);
    let shown = show(input);

    assert!(whole.consumed <= input.len(), "{shown}");
    for other in [&chunked, &counted] {
        assert_eq!(
            (other.consumed, other.ended, other.size, other.verdict),
            (whole.consumed, whole.ended, whole.size, whole.verdict),
            "chunks {lens:?}, max {max_size}: {shown}"
        );
    }
    assert!(counted.body.is_empty());
    if whole.size <= max_size {
        assert_eq!(whole.body, unlimited.body, "{shown}");
        assert_eq!(chunked.body, unlimited.body, "chunks {lens:?}: {shown}");
    } else {
        for body in [&whole.body, &chunked.body] {
            assert!(body.len() as u64 <= max_size, "{shown}");
            assert!(unlimited.body.starts_with(body), "{shown}");
        }
    }

    match reference_message(input, max_size) {
        Some(expected) => {
            assert!(whole.ended, "the message should end: {shown}");
            assert_eq!(whole.consumed, expected.consumed, "{shown}");
            assert_eq!(unlimited.body, expected.content, "{shown}");
            assert_eq!(whole.size, expected.content.len() as u64, "{shown}");
            assert_eq!(whole.verdict, expected.verdict, "max {max_size}: {shown}");
        }
        None => {
            assert!(!whole.ended, "the message must not end: {shown}");
            assert_eq!(whole.consumed, input.len(), "{shown}");
        }
    }
}

/// What one [`DataReceiver`] made of an input.
struct Received {
    consumed: usize,
    ended: bool,
    size: u64,
    verdict: DataVerdict,
    body: Vec<u8>,
}

/// Feeds `input` to a new receiver in chunks of the lengths in `lens` (cycled; at least one
/// must be non-zero), stopping at the end-of-data marker.
fn receive(input: &[u8], lens: &[usize], max_size: u64, keep: bool) -> Received {
    let mut rx = DataReceiver::new(max_size);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut ended = false;
    for &len in lens.iter().cycle() {
        let piece = &input[consumed..(consumed + len).min(input.len())];
        let (n, done) = rx.feed(piece, keep.then_some(&mut body));
        assert!(n <= piece.len(), "consumed {n} of {} bytes", piece.len());
        consumed += n;
        if done {
            ended = true;
            break;
        }
        assert_eq!(
            n,
            piece.len(),
            "a chunk without the end marker is consumed whole"
        );
        if consumed == input.len() {
            break;
        }
    }
    Received {
        consumed,
        ended,
        size: rx.size(),
        verdict: rx.verdict(),
        body,
    }
}

/// A message as the reference reading sees it.
struct ReferenceMessage {
    /// Octets up to and including the end-of-data marker.
    consumed: usize,
    /// The unstuffed content, whatever its size.
    content: Vec<u8>,
    verdict: DataVerdict,
}

/// RFC 5321 section 4.1.1.4 read the slow, obvious way: content is CRLF-terminated lines,
/// the first line that is exactly `.` ends it, a leading `.` is removed from any other line.
/// `None` if the input holds no end marker.
fn reference_message(input: &[u8], max_size: u64) -> Option<ReferenceMessage> {
    let mut start = 0;
    let mut content = Vec::new();
    let mut long_line = false;
    loop {
        let rest = &input[start..];
        if rest.starts_with(b".\r\n") {
            break;
        }
        let crlf = rest.windows(2).position(|pair| pair == b"\r\n")?;
        let line = &rest[..crlf + 2];
        // The limit counts the line as sent: stuffing dot and CRLF included.
        long_line |= line.len() > MAX_TEXT_LINE;
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        start += crlf + 2;
    }
    let bare = content.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => content.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || content[i - 1] != b'\r',
        _ => false,
    });
    let verdict = if bare {
        DataVerdict::Refuse(replies::DATA_BARE_LINE_ENDING)
    } else if content.len() as u64 > max_size {
        DataVerdict::Refuse(replies::MESSAGE_TOO_BIG)
    } else if long_line {
        DataVerdict::Refuse(replies::DATA_LINE_TOO_LONG)
    } else {
        DataVerdict::Deliver
    };
    Some(ReferenceMessage {
        consumed: start + 3,
        content,
        verdict,
    })
}

/// How the fake policy backend of [`drive_session`] answers a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One [`verdict`] per address.
    Healthy,
    /// Always `Err(())`: every RCPT gets `451 4.3.0`.
    Down,
    /// By a hash of the whole batch: `Err(())`, a verdict list cut short (the addresses
    /// past its end fail one by one), or every verdict. Answers then depend on how the
    /// RCPTs were batched, so [`session`] does not compare splits in this mode.
    Flaky,
}

/// The fake backend's verdict for one address: by the local part's prefix where the seed
/// corpus chose one (`in`: accept, `out`: opted out, `no`: unknown mailbox, `far`: not
/// local), else by a hash of the address.
pub fn verdict(address: &[u8]) -> Verdict {
    const BY_HASH: [Verdict; 4] = [
        Verdict::Accept,
        Verdict::OptedOut,
        Verdict::UnknownMailbox,
        Verdict::NotLocal,
    ];
    if address.starts_with(b"in") {
        Verdict::Accept
    } else if address.starts_with(b"out") {
        Verdict::OptedOut
    } else if address.starts_with(b"no") {
        Verdict::UnknownMailbox
    } else if address.starts_with(b"far") {
        Verdict::NotLocal
    } else {
        BY_HASH[(fnv1a(address) % 4) as usize]
    }
}

/// A message the session handed to the sink, copied out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// BULK or MAIL.
    pub kind: TransactionKind,
    /// The reverse-path, empty for `<>`.
    pub sender: Vec<u8>,
    /// The accepted recipients, in order.
    pub recipients: Vec<Vec<u8>>,
    /// The unstuffed content (empty unless the session keeps messages).
    pub body: Vec<u8>,
    /// The content's size in octets.
    pub size: u64,
}

/// Everything a session said and did over one input, to compare two runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Every reply, in order, as written by [`Session::flush`].
    pub output: Vec<u8>,
    /// The messages of every [`Event::Message`].
    pub messages: Vec<Delivered>,
    /// [`Session::errors`] at the end.
    pub errors: u32,
    /// [`Session::is_closed`] at the end.
    pub closed: bool,
    /// [`Session::in_transaction`] at the end.
    pub in_transaction: bool,
    /// TLS handshakes after STARTTLS (each [`Event::StartTls`], answered by
    /// [`Session::tls_started`]).
    pub tls_handshakes: u32,
}

/// Drives one session over `input` as a server would: reads of the lengths in `read_lens`
/// (cycled; a 0 counts as 1), advancing after each read until the session needs input,
/// resolving and flushing after each read, and at the end of the input resolving and
/// flushing what is left (after a `421` for an idle timeout when `close_at_end`). Content
/// handed over at [`Event::Content`] is collected, dropped at [`Event::MessageRefused`], and
/// joined to the rest at [`Event::Message`]. Spooling a message fails for one message in
/// eight, by a hash of its envelope. At [`Event::StartTls`] the rest of the read is
/// discarded, as the server discards plaintext pipelined after STARTTLS, and the handshake
/// succeeds: the next read is what came under TLS.
///
/// Asserts on the way that the session makes progress (every `NeedVerdicts` has something
/// pending, every `Message` and `Content` consumed bytes, the number of `advance` calls is
/// bounded by the input), never asks the caller to keep a complete line or
/// [`MAX_COMMAND_LINE`] octets unconsumed, consumes everything on `Close`, holds at most
/// [`SessionConfig::content_chunk`] octets of content (plus one) and hands them over only
/// when it keeps messages, hands over messages that passed their checks, and that every
/// flush is whole reply lines: three digits, `-` or space, text, CRLF, with a multi-line
/// reply never cut and always closed by a line with a space.
pub fn drive_session(
    config: SessionConfig,
    backend: Backend,
    input: &[u8],
    read_lens: &[usize],
    close_at_end: bool,
) -> Transcript {
    assert!(!read_lens.is_empty(), "drive_session needs read lengths");
    let identity = ServerIdentity {
        hostname: "mx.fuzz.example".to_owned(),
        max_message_size: config.max_message_size,
    };
    let mut session = Session::new(config);
    session.greet();
    let mut transcript = Transcript::default();
    let mut buffer: Vec<u8> = Vec::new();
    // Content taken at Event::Content, and the buffer swapped in for it.
    let (mut taken, mut spare) = (Vec::new(), Vec::new());
    let chunk = config.content_chunk.max(1);
    let mut read = 0;
    // Each call either ends a read (NeedInput, Close), or consumes at least one line or end
    // marker before its event (Message, MessageRefused, a NeedVerdicts after the RCPT that
    // made it pending), or at least one octet of content (Content).
    let mut calls_left = 4 * input.len() + 8;
    let mut lens = read_lens.iter().cycle();
    'read: while read < input.len() {
        let len = lens.next().copied().unwrap_or(1).max(1);
        let end = read.saturating_add(len).min(input.len());
        buffer.extend_from_slice(&input[read..end]);
        read = end;
        loop {
            assert!(calls_left > 0, "the session makes no progress");
            calls_left -= 1;
            let (consumed, event) = session.advance(&buffer);
            assert!(consumed <= buffer.len(), "consumed past the input");
            buffer.drain(..consumed);
            let held = session.message().body.len();
            assert!(
                held <= chunk.saturating_add(1),
                "holds {held} octets of content, chunk {chunk}"
            );
            match event {
                Event::NeedInput => {
                    assert!(
                        buffer.len() < MAX_COMMAND_LINE && !buffer.contains(&b'\n'),
                        "NeedInput leaves a complete or over-long line: {}",
                        show(&buffer)
                    );
                    break;
                }
                Event::NeedVerdicts => {
                    assert!(
                        !session.pending().is_empty(),
                        "NeedVerdicts with nothing pending would loop forever"
                    );
                    resolve(&mut session, backend);
                }
                Event::Message => {
                    assert!(consumed > 0, "a message ends with its marker");
                    session.swap_content(&mut spare);
                    taken.extend_from_slice(&spare);
                    deliver(&mut session, &config, &mut taken, &mut transcript);
                }
                Event::Content => {
                    assert!(consumed > 0, "content is handed over as it is consumed");
                    assert!(config.keep_message && session.in_data() && held >= chunk);
                    session.swap_content(&mut spare);
                    taken.extend_from_slice(&spare);
                }
                Event::MessageRefused => {
                    assert!(consumed > 0, "a message ends with its marker");
                    assert!(!session.in_transaction());
                    assert!(!session.in_data() && session.message().body.is_empty());
                    taken.clear();
                }
                Event::StartTls => {
                    assert!(session.starting_tls() && !session.tls_active());
                    resolve(&mut session, backend);
                    flush(&mut session, &identity, &mut transcript.output);
                    assert!(
                        last_line(&transcript.output).starts_with(b"220 2.0.0 "),
                        "STARTTLS stops the session right after its 220"
                    );
                    // Given again before the handshake, the rest of the read is consumed
                    // and dropped: never executed, never answered.
                    let (again, event) = session.advance(&buffer);
                    assert_eq!((again, event), (buffer.len(), Event::StartTls));
                    assert!(
                        !session.has_replies(),
                        "plaintext after STARTTLS was answered"
                    );
                    buffer.clear();
                    session.tls_started();
                    assert!(session.tls_active() && !session.in_transaction());
                    transcript.tls_handshakes += 1;
                    continue 'read;
                }
                Event::Close => {
                    assert!(buffer.is_empty() && session.is_closed());
                    break 'read;
                }
            }
        }
        resolve(&mut session, backend);
        flush(&mut session, &identity, &mut transcript.output);
    }
    if close_at_end {
        session.close(Closing::IdleTimeout);
    }
    resolve(&mut session, backend);
    flush(&mut session, &identity, &mut transcript.output);
    transcript.errors = session.errors();
    transcript.closed = session.is_closed();
    transcript.in_transaction = session.in_transaction();
    if transcript.closed {
        let last = last_line(&transcript.output);
        assert!(
            last.starts_with(b"221 ") || last.starts_with(b"421 "),
            "a closed session's last reply is 221 or 421, not {}",
            show(last)
        );
    }
    transcript
}

fn resolve(session: &mut Session, backend: Backend) {
    let verdicts: Vec<Verdict> = session.pending().iter().map(verdict).collect();
    let batch_hash = session
        .pending()
        .iter()
        .fold(0u64, |acc, a| acc.rotate_left(5) ^ fnv1a(a));
    let answer = match backend {
        Backend::Healthy => Ok(&verdicts[..]),
        Backend::Down => Err(()),
        Backend::Flaky => match batch_hash % 3 {
            0 => Err(()),
            1 => Ok(&verdicts[..verdicts.len() / 2]),
            _ => Ok(&verdicts[..]),
        },
    };
    session.resolve(answer);
    assert!(
        session.pending().is_empty(),
        "resolve answers every pending RCPT"
    );
}

/// Records the message that just ended, whose content (`body`, taken from the session in
/// chunks and at its end) the host holds, and answers it.
fn deliver(
    session: &mut Session,
    config: &SessionConfig,
    body: &mut Vec<u8>,
    transcript: &mut Transcript,
) {
    let message = session.message();
    assert!(
        !message.recipients.is_empty(),
        "DATA is only accepted with a recipient"
    );
    assert!(message.size <= config.max_message_size);
    assert!(message.body.is_empty(), "the host took all content");
    if config.keep_message {
        assert_eq!(body.len() as u64, message.size);
    } else {
        assert!(body.is_empty());
    }
    let delivered = Delivered {
        kind: message.kind,
        sender: message.sender.to_vec(),
        recipients: message.recipients.iter().map(<[u8]>::to_vec).collect(),
        body: std::mem::take(body),
        size: message.size,
    };
    let spooled = !(fnv1a(&delivered.sender) ^ delivered.size).is_multiple_of(8);
    let size = delivered.size;
    transcript.messages.push(delivered);
    session.delivered(if spooled { Ok(QueueId(size)) } else { Err(()) });
    assert!(
        !session.in_transaction(),
        "a delivered message ends its transaction"
    );
}

/// Flushes, then checks that what was written is whole, well-formed reply lines.
fn flush(session: &mut Session, identity: &ServerIdentity, out: &mut Vec<u8>) {
    let start = out.len();
    session.flush(identity, out);
    assert!(
        !session.has_replies(),
        "with nothing pending, a flush writes every reply"
    );
    let written = &out[start..];
    assert!(
        written.is_empty() || written.ends_with(b"\r\n"),
        "a flush ends on a line: {}",
        show(written)
    );
    let mut open: Option<&[u8]> = None;
    for line in written
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
    {
        let Some(line) = line.strip_suffix(b"\r") else {
            panic!("a reply line ends without CRLF: {}", show(written));
        };
        let well_formed = line.len() >= 4
            && matches!(line[0], b'2'..=b'5')
            && line[1..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-')
            && line[4..].iter().all(|&b| (0x20..0x7f).contains(&b));
        assert!(well_formed, "malformed reply line: {}", show(line));
        if let Some(code) = open {
            assert_eq!(&line[..3], code, "a multi-line reply changes its code");
        }
        open = (line[3] == b'-').then_some(&line[..3]);
    }
    assert!(open.is_none(), "a flush cuts a multi-line reply");
}

/// The last CRLF-terminated line of `out`, CRLF excluded.
fn last_line(out: &[u8]) -> &[u8] {
    let text = out.strip_suffix(b"\r\n").unwrap_or(out);
    let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    &text[start..]
}

/// Fuzzes [`Session`]. Three header bytes, then the client's bytes:
///
/// - byte 0: bits 0-1 the backend (0, 1 [`Backend::Healthy`], 2 `Down`, 3 `Flaky`), bit 2
///   keep messages, bit 3 harvest-resistant mode, bit 4 preferences applied to MAIL
///   transactions too, bit 5 STARTTLS offered (required when bit 7 of byte 2 is set too),
///   bits 6-7 the recipient limit (default, 1, 2, 5);
/// - byte 1: bits 0-1 the error limit (default, 0, 1, 3), bits 2-3 the message size limit
///   (default, 0, 8, 100), bits 4-6 the longest read (1, 2, 3, 7, 16, 64, 512, 4096), bit 7
///   close with a `421` at the end of the input;
/// - byte 2: the seed of the read lengths.
///
/// Drives the session with [`drive_session`] (whose progress and reply-format assertions
/// apply) over the whole input in one read and over reads of pseudo-random lengths with
/// content chunks of 1 to 16 octets by the seed (and, for inputs up to 4 KiB, one byte at a
/// time with chunks of one octet), and asserts that every run has the same [`Transcript`]:
/// replies, messages (content included: chunks change nothing), delays, error count and
/// final state. With a flaky backend the answers depend on batching, and after a STARTTLS
/// the rest of its read is discarded (what follows in later reads counts as sent under
/// TLS), so in either case only the per-run assertions apply.
pub fn session(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let (mut config, backend) = session_config(byte(0), byte(1));
    // Byte 0 has no bit left: "required" borrows the seed's top bit (the read lengths do
    // not depend on it alone).
    if config.tls == TlsPolicy::Offered && byte(2) & 0x80 != 0 {
        config.tls = TlsPolicy::Required;
    }
    let close_at_end = byte(1) & 0x80 != 0;
    let longest_read = [1, 2, 3, 7, 16, 64, 512, 4096][usize::from((byte(1) >> 4) & 0x07)];
    let input = data.get(3..).unwrap_or_default();

    let mut state = u64::from(byte(2)) | 0x9e37_79b9_7f4a_7c00;
    let read_lens: Vec<usize> = (0..61)
        .map(|_| {
            // xorshift64: cheap, deterministic, good enough to scatter split points.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % longest_read) as usize
        })
        .collect();

    let whole = drive_session(config, backend, input, &[input.len().max(1)], close_at_end);
    let chunked = |chunk| SessionConfig {
        content_chunk: chunk,
        ..config
    };
    let split_config = chunked(1 + usize::from(byte(2) % 16));
    let split = drive_session(split_config, backend, input, &read_lens, close_at_end);
    let bytewise = (input.len() <= 4096)
        .then(|| drive_session(chunked(1), backend, input, &[1], close_at_end));
    let handshakes = [Some(&whole), Some(&split), bytewise.as_ref()]
        .into_iter()
        .flatten()
        .any(|run| run.tls_handshakes > 0);
    if backend == Backend::Flaky || handshakes {
        return;
    }
    // Envelopes included: recipients are in RCPT order however reads split the input.
    assert_eq!(split, whole, "reads {read_lens:?}: {}", show(input));
    if let Some(bytewise) = bytewise {
        assert_eq!(bytewise, whole, "one byte per read: {}", show(input));
    }
}

/// The session configuration and backend that [`session`]'s first two header bytes pick.
pub fn session_config(first: u8, second: u8) -> (SessionConfig, Backend) {
    let backend = match first & 0x03 {
        0 | 1 => Backend::Healthy,
        2 => Backend::Down,
        _ => Backend::Flaky,
    };
    let config = SessionConfig {
        max_recipients: [limits::DEFAULT_MAX_RECIPIENTS, 1, 2, 5][usize::from(first >> 6)],
        max_message_size: [limits::DEFAULT_MAX_MESSAGE_SIZE, 0, 8, 100]
            [usize::from((second >> 2) & 0x03)],
        max_errors: [limits::DEFAULT_MAX_ERRORS, 0, 1, 3][usize::from(second & 0x03)],
        harvest: (first & 0x08 != 0).then_some(HarvestConfig {}),
        preferences_for_mail: first & 0x10 != 0,
        keep_message: first & 0x04 != 0,
        content_chunk: limits::DEFAULT_CONTENT_CHUNK,
        tls: match first & 0x20 {
            0 => TlsPolicy::Off,
            _ => TlsPolicy::Offered,
        },
    };
    (config, backend)
}

/// Whether `inner` lies inside `outer` (a borrow, not a copy).
fn borrows_from(outer: &[u8], inner: &[u8]) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

/// 64-bit FNV-1a: a fixed hash, so verdicts do not change from run to run.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes for an assertion message, shortened: a fuzz input can be large.
fn show(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    if bytes.len() > MAX {
        format!("{text:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// Fuzz body of the client's reply parser ([`crate::parse_reply`], used by the load
/// generator on whatever a server sends). Asserts: it never panics; a complete reply
/// consumes at least one byte and at most the input, its raw bytes are exactly the consumed
/// prefix, its code is 200..=599 and its enhanced code (if any) has the code's class; every
/// strict prefix of a reply is incomplete (`Ok(None)`), never another reply or an error; and
/// parsing reply after reply through the input always makes progress.
pub fn server_reply(data: &[u8]) {
    let mut rest = data;
    for _ in 0..=data.len() {
        match crate::parse_reply(rest) {
            Ok(Some((reply, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                assert_eq!(reply.raw, &rest[..used]);
                assert!((200..=599).contains(&reply.code), "code {}", reply.code);
                if let Some(enhanced) = reply.enhanced {
                    assert_eq!(u16::from(enhanced.class), reply.code / 100);
                }
                assert!(reply.lines().count() <= crate::client::MAX_REPLY_LINES);
                // Prefixes ending inside the last line are incomplete.
                let last_line_start = reply.raw[..used - 1]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                for cut in last_line_start..used {
                    assert_eq!(
                        crate::parse_reply(&rest[..cut]),
                        Ok(None),
                        "prefix of {cut} bytes"
                    );
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => return,
        }
    }
    unreachable!("every complete reply consumes at least one byte");
}
