//! Property tests of bulk-proto's public API: the parser on arbitrary and on generated valid
//! command lines, the session under any split of its input, and dot-stuffing round trips.
//!
//! Generated valid input follows RFC 5321's grammar (section 4.1.2: Dot-string and
//! Quoted-string local parts, domains, address literals) and the ESMTP parameters the
//! server knows (SIZE, RFC 1870; BODY, RFC 6152).

use bulk_proto::fuzzing::{self, Backend, Delivered, drive_session};
use bulk_proto::limits::{MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH};
use bulk_proto::{
    Body, Command, DataReceiver, DataVerdict, ForwardPath, MailParams, ReversePath, SessionConfig,
    TransactionKind, parse_command, replies,
};
use bulk_types::Verdict;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------------------------------
// Strategies: RFC 5321 paths and commands.

/// RFC 5322 atext: what an unquoted local part is made of.
const ATEXT: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~";

/// `Dot-string = Atom *("." Atom)`.
fn dot_string() -> impl Strategy<Value = Vec<u8>> {
    vec(vec(select(ATEXT), 1..8), 1..4).prop_map(|atoms| atoms.join(&b'.'))
}

/// `Quoted-string = DQUOTE 1*QcontentSMTP DQUOTE` (this parser refuses the empty `""`),
/// with `qtextSMTP` and `quoted-pairSMTP = "\" %d32-126`.
fn quoted_string() -> impl Strategy<Value = Vec<u8>> {
    let qtext: Vec<u8> = (32..=126u8).filter(|&b| b != b'"' && b != b'\\').collect();
    let content = prop_oneof![
        4 => select(qtext).prop_map(|b| vec![b]),
        1 => (32..=126u8).prop_map(|b| vec![b'\\', b]),
    ];
    vec(content, 1..12).prop_map(|parts| {
        let mut quoted = vec![b'"'];
        quoted.extend(parts.concat());
        quoted.push(b'"');
        quoted
    })
}

fn local_part() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => dot_string(), 1 => quoted_string()]
}

/// `sub-domain = Let-dig [Ldh-str]`: no leading or trailing hyphen.
fn label() -> impl Strategy<Value = Vec<u8>> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?".prop_map(String::into_bytes)
}

/// `Domain = sub-domain *("." sub-domain)`.
fn domain() -> impl Strategy<Value = Vec<u8>> {
    vec(label(), 1..5).prop_map(|labels| labels.join(&b'.'))
}

/// An address literal: IPv4, IPv6, or general (`dcontent` = %d33-90 / %d94-126).
fn address_literal() -> impl Strategy<Value = Vec<u8>> {
    let dcontent: Vec<u8> = (33..=126u8).filter(|b| !(91..=93).contains(b)).collect();
    prop_oneof![
        any::<[u8; 4]>().prop_map(|ip| format!("[{}.{}.{}.{}]", ip[0], ip[1], ip[2], ip[3])),
        vec(any::<u16>(), 8).prop_map(|groups| {
            let hex: Vec<String> = groups.iter().map(|g| format!("{g:x}")).collect();
            format!("[IPv6:{}]", hex.join(":"))
        }),
        vec(select(dcontent), 1..30)
            .prop_map(|inner| { format!("[{}]", String::from_utf8(inner).expect("ASCII")) }),
    ]
    .prop_map(String::into_bytes)
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )` within RFC 5321's size limits.
fn mailbox() -> impl Strategy<Value = Vec<u8>> {
    (
        local_part(),
        prop_oneof![3 => domain(), 1 => address_literal()],
    )
        .prop_filter(
            "within the limits of RFC 5321 section 4.5.3.1",
            |(local, domain)| {
                local.len() <= MAX_LOCAL_PART
                    && domain.len() <= MAX_DOMAIN
                    && local.len() + 1 + domain.len() + 2 <= MAX_PATH
            },
        )
        .prop_map(|(local, domain)| [local, domain].join(&b'@'))
}

fn mail_params() -> impl Strategy<Value = MailParams> {
    let body = prop_oneof![Just(Body::SevenBit), Just(Body::EightBitMime)];
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(body),
    )
        .prop_map(|(size, body)| MailParams { size, body })
}

fn kind() -> impl Strategy<Value = TransactionKind> {
    prop_oneof![Just(TransactionKind::Mail), Just(TransactionKind::Bulk)]
}

/// Printable text that trims to something: an EHLO name or a VRFY argument.
fn word() -> impl Strategy<Value = Vec<u8>> {
    "[!-~]([ -~]{0,30}[!-~])?".prop_map(String::into_bytes)
}

/// A command that owns its bytes ([`Command`] borrows from its line).
#[derive(Clone, Debug)]
enum Owned {
    Ehlo(Vec<u8>),
    Helo(Vec<u8>),
    /// `None` is the null reverse-path `<>`.
    Mail(TransactionKind, Option<Vec<u8>>, MailParams),
    /// `None` is `<Postmaster>`.
    Rcpt(Option<Vec<u8>>),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
}

impl Owned {
    fn command(&self) -> Command<'_> {
        match self {
            Owned::Ehlo(domain) => Command::Ehlo { domain },
            Owned::Helo(domain) => Command::Helo { domain },
            Owned::Mail(kind, from, params) => Command::Mail {
                kind: *kind,
                from: from
                    .as_deref()
                    .map_or(ReversePath::Null, ReversePath::Mailbox),
                params: *params,
            },
            Owned::Rcpt(to) => Command::Rcpt {
                to: to
                    .as_deref()
                    .map_or(ForwardPath::Postmaster, ForwardPath::Mailbox),
            },
            Owned::Data => Command::Data,
            Owned::Rset => Command::Rset,
            Owned::Noop => Command::Noop,
            Owned::Quit => Command::Quit,
            Owned::Vrfy => Command::Vrfy,
            Owned::Help => Command::Help,
            Owned::StartTls => Command::StartTls,
        }
    }
}

/// What a client calls itself: a domain, an address literal, or anything printable (the
/// parser does not check the name).
fn helo_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![domain(), address_literal(), word()]
}

fn valid_command() -> impl Strategy<Value = Owned> {
    prop_oneof![
        1 => helo_name().prop_map(Owned::Ehlo),
        1 => helo_name().prop_map(Owned::Helo),
        4 => (kind(), proptest::option::weighted(0.9, mailbox()), mail_params())
            .prop_map(|(kind, from, params)| Owned::Mail(kind, from, params)),
        4 => proptest::option::weighted(0.9, mailbox()).prop_map(Owned::Rcpt),
        1 => Just(Owned::Data),
        1 => Just(Owned::Rset),
        1 => Just(Owned::Noop),
        1 => Just(Owned::Quit),
        1 => Just(Owned::Vrfy),
        1 => Just(Owned::Help),
        1 => Just(Owned::StartTls),
    ]
}

/// Ways to write a command that the parser must read as the same command.
#[derive(Clone, Debug)]
struct Noise {
    /// Bit i flips the case of letter i of the verb, `FROM:`/`TO:`, parameters.
    case_mask: u32,
    spaces_after_colon: usize,
    spaces_before_params: usize,
    trailing_spaces: usize,
    /// A source route (`@a,@b:`), dropped by the parser.
    route: Vec<Vec<u8>>,
    body_first: bool,
    size_zeros: usize,
    /// The argument of NOOP, HELP, VRFY.
    argument: Vec<u8>,
}

fn noise() -> impl Strategy<Value = Noise> {
    (
        any::<u32>(),
        0..3usize,
        1..4usize,
        0..3usize,
        vec(domain(), 0..3),
        any::<bool>(),
        0..3usize,
        word(),
    )
        .prop_map(
            |(case_mask, colon, before, trailing, route, body_first, zeros, argument)| Noise {
                case_mask,
                spaces_after_colon: colon,
                spaces_before_params: before,
                trailing_spaces: trailing,
                route,
                body_first,
                size_zeros: zeros,
                argument,
            },
        )
}

fn recase(word: &[u8], mask: u32) -> Vec<u8> {
    word.iter()
        .enumerate()
        .map(|(i, &b)| {
            if mask & (1 << (i % 32)) != 0 {
                if b.is_ascii_uppercase() {
                    b.to_ascii_lowercase()
                } else {
                    b.to_ascii_uppercase()
                }
            } else {
                b
            }
        })
        .collect()
}

/// `<[route:]mailbox>`, the route left out if the path would exceed [`MAX_PATH`].
fn path(mailbox: &[u8], route: &[Vec<u8>]) -> Vec<u8> {
    let mut route_text = Vec::new();
    for (i, hop) in route.iter().enumerate() {
        route_text.extend_from_slice(if i == 0 { b"@" } else { b",@" });
        route_text.extend_from_slice(hop);
    }
    if !route.is_empty() {
        route_text.push(b':');
    }
    if route_text.len() + mailbox.len() + 2 > MAX_PATH {
        route_text.clear();
    }
    [&b"<"[..], &route_text, mailbox, b">"].concat()
}

/// A non-canonical but valid line for `command`.
fn noisy_line(command: &Owned, noise: &Noise) -> Vec<u8> {
    let mask = noise.case_mask;
    let mut line = Vec::new();
    let spaces = |n: usize| vec![b' '; n];
    match command {
        Owned::Ehlo(name) | Owned::Helo(name) => {
            let verb: &[u8] = if matches!(command, Owned::Ehlo(_)) {
                b"EHLO"
            } else {
                b"HELO"
            };
            line.extend(recase(verb, mask));
            line.extend(spaces(1 + noise.spaces_after_colon));
            line.extend_from_slice(name);
        }
        Owned::Mail(kind, from, params) => {
            line.extend(recase(kind.verb().as_bytes(), mask));
            line.push(b' ');
            line.extend(recase(b"FROM:", mask >> 4));
            line.extend(spaces(noise.spaces_after_colon));
            match from {
                Some(mailbox) => line.extend(path(mailbox, &noise.route)),
                None => line.extend_from_slice(b"<>"),
            }
            let mut written = Vec::new();
            if let Some(size) = params.size {
                let digits = size.to_string();
                let zeros = noise.size_zeros.min(20 - digits.len());
                let value = format!("{}{digits}", "0".repeat(zeros));
                written.push([recase(b"SIZE=", mask >> 9), value.into_bytes()].concat());
            }
            if let Some(body) = params.body {
                let value: &[u8] = match body {
                    Body::SevenBit => b"BODY=7BIT",
                    Body::EightBitMime => b"BODY=8BITMIME",
                };
                written.push(recase(value, mask >> 14));
            }
            if noise.body_first {
                written.reverse();
            }
            for param in written {
                line.extend(spaces(noise.spaces_before_params));
                line.extend(param);
            }
        }
        Owned::Rcpt(to) => {
            line.extend(recase(b"RCPT", mask));
            line.push(b' ');
            line.extend(recase(b"TO:", mask >> 4));
            line.extend(spaces(noise.spaces_after_colon));
            match to {
                Some(mailbox) => line.extend(path(mailbox, &noise.route)),
                None => line.extend(recase(b"<Postmaster>", mask >> 7)),
            }
        }
        Owned::Data => line.extend(recase(b"DATA", mask)),
        Owned::Rset => line.extend(recase(b"RSET", mask)),
        Owned::Quit => line.extend(recase(b"QUIT", mask)),
        // Eight letters, each of whose case the mask may flip.
        Owned::StartTls => line.extend(recase(b"STARTTLS", mask)),
        Owned::Noop | Owned::Help | Owned::Vrfy => {
            let verb: &[u8] = match command {
                Owned::Noop => b"NOOP",
                Owned::Help => b"HELP",
                _ => b"VRFY",
            };
            line.extend(recase(verb, mask));
            // NOOP and HELP take an optional argument, VRFY a required one.
            if mask & (1 << 31) != 0 || matches!(command, Owned::Vrfy) {
                line.push(b' ');
                line.extend_from_slice(&noise.argument);
            }
        }
    }
    line.extend(spaces(noise.trailing_spaces));
    line
}

// ---------------------------------------------------------------------------------------
// The parser.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// parse_command never panics on arbitrary bytes, and the fuzz body's invariants hold.
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(line in vec(any::<u8>(), 0..700)) {
        let _ = parse_command(&line);
        fuzzing::command_line(&line);
    }

    /// Nor on a valid line with one byte replaced or inserted anywhere.
    #[test]
    fn parse_never_panics_near_valid_lines(
        command in valid_command(),
        noise in noise(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        insert in any::<bool>(),
    ) {
        let mut line = noisy_line(&command, &noise);
        let at = at.index(line.len() + 1);
        if insert || at == line.len() {
            line.insert(at, byte);
        } else {
            line[at] = byte;
        }
        fuzzing::command_line(&line);
    }

    /// A valid command encodes to one canonical line that parses back to the same command.
    #[test]
    fn encode_then_parse_is_identity(command in valid_command()) {
        let command = command.command();
        let mut line = Vec::new();
        command.encode(&mut line);
        prop_assert!(line.ends_with(b"\r\n"));
        prop_assert_eq!(parse_command(&line[..line.len() - 2]), Ok(command));
        fuzzing::command_line(&line[..line.len() - 2]);
    }

    /// Any valid spelling (verb and keyword case, spaces after the colon and around
    /// parameters, source routes, parameter order and case, SIZE leading zeros, arguments
    /// of NOOP/HELP/VRFY) parses to the intended command.
    #[test]
    fn noisy_valid_lines_parse_to_the_command(command in valid_command(), noise in noise()) {
        let line = noisy_line(&command, &noise);
        prop_assert_eq!(
            parse_command(&line),
            Ok(command.command()),
            "line {:?}",
            String::from_utf8_lossy(&line)
        );
    }
}

// ---------------------------------------------------------------------------------------
// The fast path of the common RCPT against the full grammar.

/// Bytes that matter to the path grammar, letters and digits, and a few that must make the
/// fast path give up (space, controls, CR, LF, 8-bit).
const PATH_ALPHABET: &[u8] = b"<>@.+\"\\:[]-_,=!#~ aAzZqQ09\0\r\n\x1a\x7f\x80\xff";

/// How a RCPT line starts: the verb and keyword in several spellings, right and wrong.
const RCPT_HEADS: [&[u8]; 10] = [
    b"RCPT TO:<",
    b"rcpt to:<",
    b"RcPt tO:<",
    b"RCPT TO: <",
    b"RCPT TO:",
    b"RCPT\0TO:<",
    b"RCPT TO\x1a<",
    b"RCPTTO:<",
    b"RCPT FROM:<",
    b"",
];

/// Mailboxes as clients send them, to mutate: plain, tagged, mixed case, at the length
/// limits (local part 64 and 65 octets, path 256 and 257 with brackets), quoted, routed,
/// literal.
fn real_mailbox() -> impl Strategy<Value = Vec<u8>> {
    let long_domain = format!("{}.{}.{}", "d".repeat(63), "d".repeat(63), "d".repeat(61));
    select(vec![
        b"ann.lee+news@Example.COM".to_vec(),
        b"user1@example.com".to_vec(),
        b"a@b.c".to_vec(),
        b"x-y_z@sub-domain.example.org".to_vec(),
        b"postmaster".to_vec(),
        b"Postmaster@x.org".to_vec(),
        format!("{}@x.org", "l".repeat(64)).into_bytes(),
        format!("{}@x.org", "l".repeat(65)).into_bytes(),
        format!("{}@{long_domain}", "l".repeat(64)).into_bytes(),
        format!("{}@{long_domain}d", "l".repeat(64)).into_bytes(),
        format!("{}@{long_domain}", "l".repeat(65)).into_bytes(),
        b"\"ann lee\"@x.org".to_vec(),
        b"@relay.one,@relay.two:joe@x.org".to_vec(),
        b"a@[192.0.2.1]".to_vec(),
    ])
}

/// A RCPT line near the common shape: a head, a mailbox (a real one mutated, or bytes of
/// [`PATH_ALPHABET`]), and what follows the path.
fn rcpt_like_line() -> impl Strategy<Value = Vec<u8>> {
    let mutation = (any::<prop::sample::Index>(), select(PATH_ALPHABET), 0..3u8);
    let mutated = (real_mailbox(), vec(mutation, 0..4)).prop_map(|(mut mailbox, edits)| {
        for (at, byte, kind) in edits {
            let at = at.index(mailbox.len() + 1);
            match kind {
                0 => mailbox.insert(at, byte),
                1 if at < mailbox.len() => mailbox[at] = byte,
                _ if at < mailbox.len() => {
                    mailbox.remove(at);
                }
                _ => mailbox.push(byte),
            }
        }
        mailbox
    });
    // Runs of letters and single specials, so that structure (dots, hyphens and `@` next
    // to each other and to the brackets) comes up often.
    let token = prop_oneof![
        2 => "[a-zA-Z0-9]{1,4}".prop_map(String::into_bytes),
        3 => select(PATH_ALPHABET).prop_map(|b| vec![b]),
    ];
    let random = vec(token, 0..24).prop_map(|tokens| tokens.concat());
    let tail = select(vec![
        &b">"[..],
        b"",
        b"> ",
        b">  ",
        b"> NOTIFY=NEVER",
        b">x",
        b">>",
        b">\r\n",
        b">\r\nRCPT TO:<a@b.c>\r\n",
        b">\n",
    ]);
    (
        select(&RCPT_HEADS[..]),
        prop_oneof![3 => mutated, 1 => random],
        tail,
    )
        .prop_map(|(head, mailbox, tail)| [head, &mailbox, tail].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// On RCPT-like lines, the fast path and the full grammar agree: `parse_command` gives
    /// the general parser's result, and every path the fast path takes (whole line, or the
    /// start of a buffer with more after it) is the general parser's RCPT of that mailbox.
    #[test]
    fn fast_rcpt_path_agrees_with_the_full_grammar(line in rcpt_like_line()) {
        fuzzing::fast_rcpt_agrees(&line);
    }

    /// And on arbitrary bytes from the path alphabet after a correct head.
    #[test]
    fn fast_rcpt_path_agrees_on_path_bytes(
        head in select(&RCPT_HEADS[..3]),
        path in vec(select(PATH_ALPHABET), 0..300),
    ) {
        fuzzing::fast_rcpt_agrees(&[head, &path].concat());
    }
}

// ---------------------------------------------------------------------------------------
// The session.

/// How a generated transaction ends.
#[derive(Clone, Debug)]
enum End {
    /// DATA with this content (unstuffed lines, no CR or LF inside).
    Data(Vec<Vec<u8>>),
    Rset,
}

#[derive(Clone, Debug)]
struct Transaction {
    kind: TransactionKind,
    sender: Option<Vec<u8>>,
    size: Option<u64>,
    /// `None` is `<Postmaster>`.
    recipients: Vec<Option<Vec<u8>>>,
    noops: usize,
    end: End,
}

/// A recipient whose verdict the fake backend decides by prefix (see
/// [`fuzzing::verdict`]), or one decided by hash, or `<Postmaster>`.
fn recipient() -> impl Strategy<Value = Option<Vec<u8>>> {
    let prefixed = (
        select(&["in", "out", "no", "far"][..]),
        0..1000u32,
        domain(),
    )
        .prop_map(|(prefix, n, domain)| {
            Some([format!("{prefix}{n}@").into_bytes(), domain].concat())
        });
    prop_oneof![
        6 => prefixed,
        2 => mailbox().prop_map(Some),
        1 => Just(None),
    ]
}

/// Message content: lines without CR or LF, some starting with a dot.
fn content() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = any::<u8>().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n');
    let line = (any::<bool>(), vec(byte, 0..60)).prop_map(|(dot, mut line)| {
        if dot {
            line.insert(0, b'.');
        }
        line
    });
    vec(line, 0..8)
}

fn transaction() -> impl Strategy<Value = Transaction> {
    (
        kind(),
        proptest::option::weighted(0.9, mailbox()),
        proptest::option::of(0..=bulk_proto::limits::DEFAULT_MAX_MESSAGE_SIZE),
        vec(recipient(), 0..6),
        0..2usize,
        prop_oneof![3 => content().prop_map(End::Data), 1 => Just(End::Rset)],
        0..1000u32,
    )
        .prop_map(|(kind, sender, size, mut recipients, noops, end, n)| {
            // A client waits for 354 before it sends content; this one does not, so a DATA
            // must not be refused: its first recipient is always accepted.
            if matches!(end, End::Data(_)) {
                recipients.insert(0, Some(format!("in{n}@accept.example").into_bytes()));
            }
            Transaction {
                kind,
                sender,
                size,
                recipients,
                noops,
                end,
            }
        })
}

fn dot_stuff(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether a RCPT of this kind is accepted by the fake backend.
fn accepted(kind: TransactionKind, recipient: &Option<Vec<u8>>) -> bool {
    match recipient {
        None => kind == TransactionKind::Mail,
        Some(address) => match fuzzing::verdict(address) {
            Verdict::Accept => true,
            Verdict::OptedOut => kind == TransactionKind::Mail,
            Verdict::UnknownMailbox | Verdict::NotLocal => false,
        },
    }
}

/// The client's bytes, the number of replies expected (one per command, one per message),
/// and the messages the sink should receive.
fn conversation(transactions: &[Transaction], quit: bool) -> (Vec<u8>, usize, Vec<Delivered>) {
    let mut input = Vec::new();
    let mut replies = 1; // the greeting
    let mut delivered = Vec::new();
    let mut send = |command: Command<'_>, input: &mut Vec<u8>| {
        command.encode(input);
        replies += 1;
    };
    send(
        Command::Ehlo {
            domain: b"client.example",
        },
        &mut input,
    );
    for tx in transactions {
        let from = tx
            .sender
            .as_deref()
            .map_or(ReversePath::Null, ReversePath::Mailbox);
        let params = MailParams {
            size: tx.size,
            body: None,
        };
        send(
            Command::Mail {
                kind: tx.kind,
                from,
                params,
            },
            &mut input,
        );
        for recipient in &tx.recipients {
            let to = recipient
                .as_deref()
                .map_or(ForwardPath::Postmaster, ForwardPath::Mailbox);
            send(Command::Rcpt { to }, &mut input);
        }
        for _ in 0..tx.noops {
            send(Command::Noop, &mut input);
        }
        match &tx.end {
            End::Rset => send(Command::Rset, &mut input),
            End::Data(lines) => {
                send(Command::Data, &mut input);
                input.extend(dot_stuff(lines));
                input.extend_from_slice(b".\r\n");
                let body: Vec<u8> = lines
                    .iter()
                    .flat_map(|l| [&l[..], b"\r\n"].concat())
                    .collect();
                // In RCPT order, postmaster included, whatever the reads.
                let recipients: Vec<Vec<u8>> = tx
                    .recipients
                    .iter()
                    .filter(|r| accepted(tx.kind, r))
                    .map(|r| r.clone().unwrap_or_else(|| b"postmaster".to_vec()))
                    .collect();
                delivered.push(Delivered {
                    kind: tx.kind,
                    sender: tx.sender.clone().unwrap_or_default(),
                    recipients,
                    size: body.len() as u64,
                    body,
                });
            }
        }
    }
    if quit {
        send(Command::Quit, &mut input);
    }
    replies += delivered.len();
    (input, replies, delivered)
}

/// Final lines of replies (`NNN text`), which is one per reply.
fn count_replies(output: &[u8]) -> usize {
    output
        .split(|&b| b == b'\n')
        .filter(|line| line.len() > 3 && line[3] == b' ')
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A generated valid pipelined conversation gets the same replies, messages and final
    /// state however its bytes are split into reads and its messages' content into chunks;
    /// it makes no protocol error, every command gets one reply, and the sink receives
    /// exactly the messages sent.
    #[test]
    fn session_output_does_not_depend_on_reads(
        transactions in vec(transaction(), 0..5),
        quit in any::<bool>(),
        reads in vec(1..80usize, 1..16),
        chunk in 1..100usize,
    ) {
        let (input, replies, expected) = conversation(&transactions, quit);
        let config = SessionConfig { keep_message: true, ..SessionConfig::default() };
        let drive = |lens: &[usize], content_chunk| {
            let config = SessionConfig { content_chunk, ..config };
            drive_session(config, Backend::Healthy, &input, lens, false)
        };
        let whole = drive(&[input.len().max(1)], usize::MAX);
        prop_assert_eq!(&drive(&reads, chunk), &whole, "reads {:?}, chunk {}", reads, chunk);
        prop_assert_eq!(&drive(&[1], 1), &whole);
        prop_assert_eq!(whole.errors, 0, "{}", String::from_utf8_lossy(&whole.output));
        prop_assert_eq!(count_replies(&whole.output), replies);
        prop_assert_eq!(&whole.messages, &expected);
        prop_assert_eq!(whole.closed, quit);
        prop_assert!(!whole.in_transaction);
    }

    /// The same conversations through the session fuzz body, under every configuration its
    /// header can pick (limits, harvest mode, failing backends, a 421 at the end).
    #[test]
    fn session_fuzz_body_on_valid_conversations(
        transactions in vec(transaction(), 0..4),
        quit in any::<bool>(),
        header in any::<[u8; 3]>(),
    ) {
        let (input, _, _) = conversation(&transactions, quit);
        fuzzing::session(&[&header[..], &input].concat());
    }

    /// The fuzz bodies of the session and the data receiver on arbitrary bytes.
    #[test]
    fn fuzz_bodies_on_arbitrary_bytes(data in vec(any::<u8>(), 0..600)) {
        fuzzing::data_receiver(&data);
        fuzzing::session(&data);
    }
}

// ---------------------------------------------------------------------------------------
// DATA content.

/// Feeds `input` to a new receiver in chunks of the lengths in `lens` (cycled, 0 feeds an
/// empty slice); returns (consumed, ended, body, verdict).
fn feed_in_chunks(input: &[u8], lens: &[usize]) -> (usize, bool, Vec<u8>, DataVerdict) {
    let mut rx = DataReceiver::new(bulk_proto::limits::DEFAULT_MAX_MESSAGE_SIZE);
    let mut body = Vec::new();
    let mut consumed = 0;
    let lens: Vec<usize> = if lens.iter().all(|&l| l == 0) {
        vec![1]
    } else {
        lens.to_vec()
    };
    for &len in lens.iter().cycle() {
        let piece = &input[consumed..(consumed + len).min(input.len())];
        let (n, ended) = rx.feed(piece, Some(&mut body));
        consumed += n;
        if ended {
            return (consumed, true, body, rx.verdict());
        }
        assert_eq!(n, piece.len());
        if consumed == input.len() {
            break;
        }
    }
    (consumed, false, body, rx.verdict())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Dot-stuffed CRLF lines plus `.\r\n`, fed in any chunks, give back exactly the lines
    /// and `Deliver`, and leave whatever follows the marker (pipelined commands) unconsumed.
    #[test]
    fn dot_stuffing_round_trips(
        lines in content(),
        after in vec(any::<u8>(), 0..40),
        lens in vec(0..40usize, 1..10),
    ) {
        let mut input = dot_stuff(&lines);
        input.extend_from_slice(b".\r\n");
        let message_len = input.len();
        input.extend_from_slice(&after);
        let (consumed, ended, body, verdict) = feed_in_chunks(&input, &lens);
        let expected: Vec<u8> = lines.iter().flat_map(|l| [&l[..], b"\r\n"].concat()).collect();
        prop_assert!(ended);
        prop_assert_eq!(consumed, message_len);
        prop_assert_eq!(body, expected);
        prop_assert_eq!(verdict, DataVerdict::Deliver);
    }

    /// One bare CR or LF anywhere in the content (`\n.\n` smuggling included) never ends the
    /// message early: it still ends at its `<CRLF>.<CRLF>` (sent after one more CRLF, so the
    /// inserted byte cannot take the marker's line start), refused for the bare line ending.
    #[test]
    fn a_bare_line_ending_is_refused_never_an_end(
        lines in content(),
        at in any::<prop::sample::Index>(),
        cr in any::<bool>(),
        lens in vec(0..40usize, 1..10),
    ) {
        let mut input = dot_stuff(&lines);
        input.insert(at.index(input.len() + 1), if cr { b'\r' } else { b'\n' });
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let message_len = input.len() - b"QUIT\r\n".len();
        let (consumed, ended, _, verdict) = feed_in_chunks(&input, &lens);
        prop_assert!(ended);
        prop_assert_eq!(consumed, message_len);
        prop_assert_eq!(verdict, DataVerdict::Refuse(replies::DATA_BARE_LINE_ENDING));
    }
}

// ---------------------------------------------------------------------------------------
// Enhanced status codes in replies (RFC 3463), against a plain reading of the rule.

/// The rule, read as plainly as possible: the reply text's first space-separated token
/// splits on '.' into exactly three parts of digits, of at most 1, 3 and 3 digits, the
/// first equal to the reply code's first digit. (The parser scans bytes instead.)
fn reference_enhanced_code(code: u16, text: &[u8]) -> Option<(u8, u16, u16)> {
    let token = text.split(|&b| b == b' ').next()?;
    let parts: Vec<&[u8]> = token.split(|&b| b == b'.').collect();
    let number = |part: &[u8], max_len: usize| -> Option<u16> {
        let digits = !part.is_empty() && part.len() <= max_len;
        (digits && part.iter().all(u8::is_ascii_digit)).then(|| {
            part.iter()
                .fold(0, |acc, &d| acc * 10 + u16::from(d - b'0'))
        })
    };
    let [class, subject, detail] = parts.as_slice() else {
        return None;
    };
    let class = number(class, 1)?;
    (class == code / 100).then_some(())?;
    Some((class as u8, number(subject, 3)?, number(detail, 3)?))
}

proptest! {
    // Short inputs, cheap cases: enough of them to meet every branch many times.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Every reply text made of digits, dots, spaces, tabs and letters gets exactly the
    /// enhanced code the plain reading gives, for every reply class.
    #[test]
    fn enhanced_codes_are_read_as_the_rule_says(
        code in select(vec![250u16, 354, 421, 452, 550, 554]),
        text in vec(select(b"0123456789..2345 \tx".to_vec()), 0..14),
    ) {
        let mut reply = code.to_string().into_bytes();
        reply.push(b' ');
        reply.extend_from_slice(&text);
        reply.extend_from_slice(b"\r\n");
        let (parsed, used) = bulk_proto::parse_reply(&reply).unwrap().unwrap();
        prop_assert_eq!(used, reply.len());
        let got = parsed.enhanced.map(|e| (e.class, e.subject, e.detail));
        prop_assert_eq!(got, reference_enhanced_code(code, &text));
    }
}
