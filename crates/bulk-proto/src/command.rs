//! SMTP command lines: parse (RFC 5321 section 4.1 plus the BULK verb) and encode.
//!
//! The parser takes one command line *without* its CRLF and returns a [`Command`] that
//! borrows from it, or a [`CommandError`] that names the reply to send. It never allocates.
//! Line framing (CRLF, the 512-octet limit, bare LF) is the session's job, not this module's.

use crate::limits::{MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH};
use crate::reply::{Reply, replies};

/// Which verb opened a transaction: the draft's `BULK FROM:` or RFC 5321's `MAIL FROM:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    /// `MAIL FROM:`: recipients are checked for existence and relaying only.
    Mail,
    /// `BULK FROM:`: every recipient is decided by its opt-in / opt-out preference.
    Bulk,
}

impl TransactionKind {
    /// The verb as sent on the wire.
    pub fn verb(self) -> &'static str {
        match self {
            TransactionKind::Mail => "MAIL",
            TransactionKind::Bulk => "BULK",
        }
    }
}

/// The reverse-path of `MAIL FROM:` / `BULK FROM:` (RFC 5321 section 4.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversePath<'a> {
    /// `<>`: the null sender of bounces.
    Null,
    /// `<local@domain>`, the source route (if any) already dropped.
    Mailbox(&'a [u8]),
}

/// The forward-path of `RCPT TO:` (RFC 5321 section 4.1.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardPath<'a> {
    /// `<Postmaster>` without a domain, which every server must accept (section 4.5.1).
    Postmaster,
    /// `<local@domain>`, the source route (if any) already dropped.
    Mailbox(&'a [u8]),
}

/// The `BODY=` parameter of RFC 6152.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The ESMTP parameters this server knows on `MAIL FROM:` / `BULK FROM:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size in octets.
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152).
    pub body: Option<Body>,
}

/// One parsed command. Slices borrow from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain`.
    Ehlo {
        /// The client's name for itself, as sent.
        domain: &'a [u8],
    },
    /// `HELO domain`.
    Helo {
        /// The client's name for itself, as sent.
        domain: &'a [u8],
    },
    /// `MAIL FROM:<path> [params]` or `BULK FROM:<path> [params]`.
    Mail {
        /// MAIL or BULK.
        kind: TransactionKind,
        /// The reverse-path.
        from: ReversePath<'a>,
        /// Known ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        /// The forward-path.
        to: ForwardPath<'a>,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS` (RFC 3207), which takes no parameters.
    StartTls,
}

/// Why a command line was refused. Each variant maps to exactly one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The verb is not one this server knows.
    #[error("unknown command")]
    UnknownCommand,
    /// A verb RFC 5321 names that this server does not offer (EXPN, TURN, ...).
    #[error("command not implemented")]
    NotImplemented,
    /// NUL, another control byte, or a byte above 127 in the line.
    #[error("command line contains a control or 8-bit byte")]
    BadByte,
    /// `EHLO` / `HELO` without a name.
    #[error("EHLO/HELO needs a hostname")]
    HeloSyntax,
    /// `MAIL` / `BULK` not followed by `FROM:<...>`.
    #[error("syntax: MAIL FROM:<address> or BULK FROM:<address>")]
    MailSyntax,
    /// `RCPT` not followed by `TO:<...>`.
    #[error("syntax: RCPT TO:<address>")]
    RcptSyntax,
    /// `VRFY` without an argument.
    #[error("syntax: VRFY address")]
    VrfySyntax,
    /// An argument given to DATA, RSET or QUIT.
    #[error("command takes no arguments")]
    NoArguments,
    /// The reverse-path is not a valid path.
    #[error("bad sender address syntax")]
    BadSender,
    /// The forward-path is not a valid path.
    #[error("bad recipient address syntax")]
    BadRecipient,
    /// A path over the limits of RFC 5321 section 4.5.3.1.
    #[error("address too long")]
    SenderTooLong,
    /// A path over the limits of RFC 5321 section 4.5.3.1.
    #[error("address too long")]
    RecipientTooLong,
    /// An ESMTP parameter this server does not support.
    #[error("unsupported ESMTP parameter")]
    UnknownParameter,
    /// A known parameter with a bad value (`SIZE=abc`, `BODY=9BIT`) or given twice.
    #[error("bad ESMTP parameter value")]
    BadParameter,
    /// `STARTTLS` with parameters (RFC 3207 section 4 allows none).
    #[error("STARTTLS takes no parameters")]
    StartTlsParameters,
}

impl CommandError {
    /// The reply this error is answered with.
    pub fn reply(self) -> Reply {
        match self {
            CommandError::UnknownCommand => replies::UNKNOWN_COMMAND,
            CommandError::NotImplemented => replies::NOT_IMPLEMENTED,
            CommandError::BadByte => replies::BAD_BYTE,
            CommandError::HeloSyntax => replies::HELO_SYNTAX,
            CommandError::MailSyntax => replies::MAIL_SYNTAX,
            CommandError::RcptSyntax => replies::RCPT_SYNTAX,
            CommandError::VrfySyntax => replies::VRFY_SYNTAX,
            CommandError::NoArguments => replies::NO_ARGUMENTS,
            CommandError::BadSender => replies::BAD_SENDER,
            CommandError::BadRecipient => replies::BAD_RECIPIENT,
            CommandError::SenderTooLong => replies::SENDER_TOO_LONG,
            CommandError::RecipientTooLong => replies::RECIPIENT_TOO_LONG,
            CommandError::UnknownParameter => replies::UNKNOWN_PARAMETER,
            CommandError::BadParameter => replies::BAD_PARAMETER,
            CommandError::StartTlsParameters => replies::STARTTLS_SYNTAX,
        }
    }
}

/// Lower-cases the four bytes of a verb at once. Exact for letters, and no non-letter
/// byte maps onto a lower-case letter, so comparing against an all-letter verb is exact.
#[inline]
fn verb_key(line: &[u8]) -> Option<u32> {
    let four: [u8; 4] = line.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(four) | 0x2020_2020)
}

const fn key(verb: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*verb)
}

/// Parses one command line, given without its CRLF.
///
/// The common shape of the hot path, `RCPT TO:<local@domain>` with a dot-atom local part
/// and a plain domain, is recognized by `rcpt_fast` in one pass over the line; every
/// other line (and any RCPT it does not recognize) goes to the full grammar, which gives
/// the same result for the lines the fast path accepts (a property test and the
/// `command_line` fuzz body check it).
#[inline]
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, CommandError> {
    if let Some(fast) = rcpt_fast(line)
        && fast.end == line.len()
    {
        return Ok(Command::Rcpt {
            to: ForwardPath::Mailbox(fast.mailbox),
        });
    }
    parse_command_general(line)
}

/// `RCPT TO:` as eight bytes, and the mask that folds the case of its letters only: a mask
/// on the space and the colon would let `\0` and `\x1a` pass for them.
const RCPT_TO: u64 = u64::from_le_bytes(*b"rcpt to:");
const RCPT_TO_FOLD: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0, 0x20, 0x20, 0]);

/// Classes of octets for the fast RCPT path: its automaton ([`RCPT_DFA`]) treats every
/// octet of a class alike.
const C_OTHER: u8 = 0;
const C_ALNUM: u8 = 1;
const C_HYPHEN: u8 = 2;
/// atext other than letters, digits and `-`.
const C_ATEXT: u8 = 3;
const C_DOT: u8 = 4;
const C_AT: u8 = 5;
const C_GT: u8 = 6;
/// No octet: pads the last group of a line that ends within it; changes no state.
const C_PAD: u8 = 7;

/// The class of each octet.
static FAST_CLASS: [u8; 256] = {
    let mut table = [C_OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() {
            C_ALNUM
        } else if c == b'-' {
            C_HYPHEN
        } else if CLASSES[b] & ATEXT != 0 {
            C_ATEXT
        } else if c == b'.' {
            C_DOT
        } else if c == b'@' {
            C_AT
        } else if c == b'>' {
            C_GT
        } else {
            C_OTHER
        };
        b += 1;
    }
    table
};

/// States of the fast RCPT path's automaton, by number. The two that end the scan come
/// last and only lead to themselves: once given up, or past the closing `>`, the scan
/// stays there, so a run of steps needs one check at its end.
const LOCAL_START: usize = 0;
const LOCAL_ATOM: usize = 1;
const DOMAIN_START: usize = 2;
const DOMAIN_ALNUM: usize = 3;
const DOMAIN_HYPHEN: usize = 4;
/// Anything the fast path does not know: the full grammar decides.
const FAST_GIVE_UP: usize = 6;
/// The closing `>` of a plain path was seen.
const FAST_DONE: usize = 7;

/// One octet's step, by state and class, over
/// `Dot-string "@" sub-domain *("." sub-domain) ">"` with `Dot-string = Atom *("." Atom)`
/// (atext atoms) and `sub-domain = Let-dig [Ldh-str]` (RFC 5321 section 4.1.2): exactly the
/// paths the full grammar ([`parse_path`]) accepts without a source route, a quoted local
/// part or an address literal. Any octet outside it gives up, never refuses.
const fn class_step(state: usize, class: u8) -> usize {
    match (state, class) {
        (_, C_PAD) | (FAST_GIVE_UP | FAST_DONE, _) => state,
        (LOCAL_START, C_ALNUM | C_HYPHEN | C_ATEXT) => LOCAL_ATOM,
        (LOCAL_ATOM, C_ALNUM | C_HYPHEN | C_ATEXT) => LOCAL_ATOM,
        (LOCAL_ATOM, C_DOT) => LOCAL_START,
        (LOCAL_ATOM, C_AT) => DOMAIN_START,
        (DOMAIN_START | DOMAIN_ALNUM | DOMAIN_HYPHEN, C_ALNUM) => DOMAIN_ALNUM,
        (DOMAIN_ALNUM | DOMAIN_HYPHEN, C_HYPHEN) => DOMAIN_HYPHEN,
        (DOMAIN_ALNUM, C_DOT) => DOMAIN_START,
        (DOMAIN_ALNUM, C_GT) => FAST_DONE,
        _ => FAST_GIVE_UP,
    }
}

/// Four octets' classes, 3 bits each, index a row of [`RCPT_DFA`].
const QUAD: usize = 4096;
/// The rows of [`RCPT_DFA`]: eight states of [`QUAD`] entries.
const DFA_LEN: usize = 8 * QUAD;

/// The automaton four octets a step: the entry at `state * QUAD + classes` is the state
/// after those four octets, times [`QUAD`] (so a step is one load at `state | classes`).
/// Four octets a step keep the chain of dependent loads a quarter as long as one a step.
/// 64 KiB, of which a path touches a few lines: the rows of its states and the entries of
/// the few class patterns of addresses (mostly letters and digits).
static RCPT_DFA: [u16; DFA_LEN] = {
    let mut table = [0u16; DFA_LEN];
    let mut state = 0;
    while state < 8 {
        let mut classes = 0;
        while classes < QUAD {
            let mut next = class_step(state, (classes >> 9) as u8);
            next = class_step(next, ((classes >> 6) & 7) as u8);
            next = class_step(next, ((classes >> 3) & 7) as u8);
            next = class_step(next, (classes & 7) as u8);
            table[state * QUAD + classes] = (next * QUAD) as u16;
            classes += 1;
        }
        state += 1;
    }
    table
};

/// The classes of four octets as a row index of [`RCPT_DFA`].
#[inline(always)]
fn quad(a: u8, b: u8, c: u8, d: u8) -> usize {
    let class = |b: u8| usize::from(FAST_CLASS[usize::from(b)]);
    (class(a) << 9) | (class(b) << 6) | (class(c) << 3) | class(d)
}

/// One step of four octets. The mask keeps the index in the table without a bounds
/// check (every state is a row offset below [`DFA_LEN`], so it changes nothing).
#[inline(always)]
fn dfa_step(state: u16, classes: usize) -> u16 {
    RCPT_DFA[(usize::from(state) | classes) & (DFA_LEN - 1)]
}

/// What [`rcpt_fast`] takes from a RCPT line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FastRcpt<'a> {
    pub(crate) mailbox: &'a [u8],
    /// The index just past the path's `>`.
    pub(crate) end: usize,
    /// The mailbox is known to hold no upper-case letter and no `+` (see
    /// [`AddressBatch::push_normal`](bulk_types::AddressBatch::push_normal)); `false` when
    /// not known either way.
    pub(crate) normal: bool,
}

/// The fast path of the common RCPT: `line` starts with `RCPT TO:<` (verb and keyword in
/// any case, no space before the path) and a plain path within RFC 5321's limits. Returns
/// the mailbox and where its path ends, or `None` for anything else, which the full
/// grammar must then parse: `None` never means the line is wrong.
///
/// Four octets a table step, two steps between checks: no separate printable check is
/// needed, since every octet the automaton accepts is printable ASCII.
#[inline]
pub(crate) fn rcpt_fast(line: &[u8]) -> Option<FastRcpt<'_>> {
    const RUN: usize = 8;
    const GIVE_UP: u16 = (FAST_GIVE_UP * QUAD) as u16;
    const DONE: u16 = (FAST_DONE * QUAD) as u16;
    let head = u64::from_le_bytes(line.get(..8)?.try_into().ok()?);
    if head | RCPT_TO_FOLD != RCPT_TO || line.get(8) != Some(&b'<') {
        return None;
    }
    // The plainest paths first, sixteen octets a step: a subset of what the automaton
    // below takes, answered alike (see `plain.rs`).
    if let Some(plain) = crate::plain::plain_path(&line[9..]) {
        return Some(FastRcpt {
            mailbox: &line[9..9 + plain.close],
            end: 9 + plain.close + 1,
            normal: plain.normal,
        });
    }
    // The path after its `<`, scanned no further than the longest path allows: a `>`
    // found within is at most at index MAX_PATH - 1 of the path, so the path is within
    // its limit.
    let after = &line[9..line.len().min(8 + MAX_PATH)];
    let mut state = 0u16;
    // Where the last run of steps started: the `>` is in it, once the scan is done.
    let mut run = 0;
    let mut chunks = after.chunks_exact(RUN);
    for chunk in &mut chunks {
        state = dfa_step(state, quad(chunk[0], chunk[1], chunk[2], chunk[3]));
        state = dfa_step(state, quad(chunk[4], chunk[5], chunk[6], chunk[7]));
        if state >= GIVE_UP {
            break;
        }
        run += RUN;
    }
    if state < GIVE_UP {
        // The last octets, padded: a `C_PAD` class changes nothing.
        let rest = chunks.remainder();
        let mut padded = [C_PAD; RUN];
        for (class, &b) in padded.iter_mut().zip(rest) {
            *class = FAST_CLASS[usize::from(b)];
        }
        let [a, b, c, d, e, f, g, h] = padded.map(usize::from);
        state = dfa_step(state, (a << 9) | (b << 6) | (c << 3) | d);
        state = dfa_step(state, (e << 9) | (f << 6) | (g << 3) | h);
    }
    if state != DONE {
        return None;
    }
    // The first `>` is the closing one: a `>` anywhere else gives up for good.
    let close = run + after[run..].iter().position(|&b| b == b'>')?;
    let mailbox = &after[..close];
    // The domain is shorter than the path, so only the local part can pass its limit; a
    // mailbox this short cannot hold a local part over it.
    if mailbox.len() > MAX_LOCAL_PART + 1
        && memchr::memchr(b'@', mailbox).is_none_or(|at| at > MAX_LOCAL_PART)
    {
        return None;
    }
    Some(FastRcpt {
        mailbox,
        end: 9 + close + 1,
        normal: false,
    })
}

/// Parses one command line by the full grammar (what [`parse_command`] does for every line
/// its fast path does not take).
pub(crate) fn parse_command_general(line: &[u8]) -> Result<Command<'_>, CommandError> {
    // RFC 5321 commands are ASCII; NUL and other control bytes have no place in them
    // (TAB included: the grammar only knows SP), and 8-bit data is SMTPUTF8's, not ours.
    // A fold without short-circuit, so the check vectorizes: this runs on every line.
    let printable = line
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x5f));
    if !printable {
        return Err(CommandError::BadByte);
    }
    let Some(verb) = verb_key(line) else {
        return Err(CommandError::UnknownCommand);
    };
    let rest = &line[4..];
    // The verb must end at SP or at the end of the line ("RCPTX" is not RCPT). STARTTLS,
    // the one verb longer than four letters, is told apart here, off the common path.
    let (has_arg, arg) = match rest.split_first() {
        None => (false, rest),
        Some((b' ', arg)) => (true, arg),
        Some(_) if verb == key(b"star") => return parse_starttls(rest),
        Some(_) => return Err(CommandError::UnknownCommand),
    };
    match verb {
        v if v == key(b"rcpt") => parse_rcpt(arg),
        v if v == key(b"mail") => parse_mail(TransactionKind::Mail, arg),
        v if v == key(b"bulk") => parse_mail(TransactionKind::Bulk, arg),
        v if v == key(b"ehlo") || v == key(b"helo") => {
            let domain = trim_spaces(arg);
            if domain.is_empty() {
                return Err(CommandError::HeloSyntax);
            }
            Ok(if v == key(b"ehlo") {
                Command::Ehlo { domain }
            } else {
                Command::Helo { domain }
            })
        }
        v if v == key(b"data") || v == key(b"rset") || v == key(b"quit") => {
            if has_arg && !trim_spaces(arg).is_empty() {
                return Err(CommandError::NoArguments);
            }
            Ok(if v == key(b"data") {
                Command::Data
            } else if v == key(b"rset") {
                Command::Rset
            } else {
                Command::Quit
            })
        }
        v if v == key(b"noop") => Ok(Command::Noop),
        v if v == key(b"help") => Ok(Command::Help),
        v if v == key(b"vrfy") => {
            if trim_spaces(arg).is_empty() {
                Err(CommandError::VrfySyntax)
            } else {
                Ok(Command::Vrfy)
            }
        }
        v if v == key(b"expn")
            || v == key(b"turn")
            || v == key(b"etrn")
            || v == key(b"auth")
            || v == key(b"bdat")
            || v == key(b"send")
            || v == key(b"soml")
            || v == key(b"saml") =>
        {
            Err(CommandError::NotImplemented)
        }
        _ => Err(CommandError::UnknownCommand),
    }
}

/// `STARTTLS` after its first four letters: `TTLS` in any case, then nothing but spaces
/// (RFC 3207 section 4: no parameters; trailing spaces are tolerated as for DATA).
fn parse_starttls(rest: &[u8]) -> Result<Command<'static>, CommandError> {
    let Some(tail) = rest
        .get(..4)
        .filter(|tail| tail.eq_ignore_ascii_case(b"TTLS"))
    else {
        return Err(CommandError::UnknownCommand);
    };
    match rest[tail.len()..].split_first() {
        None => Ok(Command::StartTls),
        Some((b' ', arg)) if trim_spaces(arg).is_empty() => Ok(Command::StartTls),
        Some((b' ', _)) => Err(CommandError::StartTlsParameters),
        Some(_) => Err(CommandError::UnknownCommand),
    }
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    &s[start..end]
}

/// Strips a case-insensitive keyword (`FROM:` / `TO:`) and the spaces after it. RFC 5321
/// allows no space after the colon, but many clients send one and every major server
/// accepts it, so this one does too.
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = &arg[keyword.len()..];
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    Some(&rest[spaces..])
}

fn parse_mail(kind: TransactionKind, arg: &[u8]) -> Result<Command<'_>, CommandError> {
    let after = strip_keyword(arg, b"FROM:").ok_or(CommandError::MailSyntax)?;
    if after.starts_with(b"<>") {
        let params = parse_mail_params(&after[2..])?;
        return Ok(Command::Mail {
            kind,
            from: ReversePath::Null,
            params,
        });
    }
    let (mailbox, rest) = match parse_path(after) {
        Ok(found) => found,
        Err(PathError::TooLong) => return Err(CommandError::SenderTooLong),
        Err(PathError::Syntax) => return Err(CommandError::BadSender),
    };
    let params = parse_mail_params(rest)?;
    Ok(Command::Mail {
        kind,
        from: ReversePath::Mailbox(mailbox),
        params,
    })
}

fn parse_rcpt(arg: &[u8]) -> Result<Command<'_>, CommandError> {
    let after = strip_keyword(arg, b"TO:").ok_or(CommandError::RcptSyntax)?;
    // <Postmaster> with no domain must be accepted (RFC 5321 section 4.1.1.3).
    let postmaster = b"<postmaster>";
    let (to, rest) = if after.len() >= postmaster.len()
        && after[..postmaster.len()].eq_ignore_ascii_case(postmaster)
    {
        (ForwardPath::Postmaster, &after[postmaster.len()..])
    } else {
        match parse_path(after) {
            Ok((mailbox, rest)) => (ForwardPath::Mailbox(mailbox), rest),
            Err(PathError::TooLong) => return Err(CommandError::RecipientTooLong),
            Err(PathError::Syntax) => return Err(CommandError::BadRecipient),
        }
    };
    // No RCPT parameter is advertised (no DSN), so any parameter is unknown.
    match params(rest)?.next() {
        Some(Ok(_)) => Err(CommandError::UnknownParameter),
        Some(Err(e)) => Err(e),
        None => Ok(Command::Rcpt { to }),
    }
}

enum PathError {
    Syntax,
    TooLong,
}

/// Parses `"<" [A-d-l ":"] Mailbox ">"` at the start of `s` (RFC 5321 section 4.1.2) and
/// returns the mailbox (source route dropped, as section 4.1.1.3 advises) and what follows
/// the closing bracket.
fn parse_path(s: &[u8]) -> Result<(&[u8], &[u8]), PathError> {
    if s.first() != Some(&b'<') {
        return Err(PathError::Syntax);
    }
    let mut i = 1;
    // Source route: "@one,@two:" before the mailbox.
    if s.get(i) == Some(&b'@') {
        loop {
            i += 1; // the '@'
            let len = domain_len(&s[i..]).ok_or(PathError::Syntax)?;
            i += len;
            match s.get(i) {
                Some(b',') if s.get(i + 1) == Some(&b'@') => i += 1,
                Some(b':') => {
                    i += 1;
                    break;
                }
                _ => return Err(PathError::Syntax),
            }
        }
    }
    let start = i;
    let local_len = local_part_len(&s[i..])?;
    i += local_len;
    if s.get(i) != Some(&b'@') {
        return Err(PathError::Syntax);
    }
    i += 1;
    let domain_len = if s.get(i) == Some(&b'[') {
        address_literal_len(&s[i..]).ok_or(PathError::Syntax)?
    } else {
        domain_len(&s[i..]).ok_or(PathError::Syntax)?
    };
    i += domain_len;
    if s.get(i) != Some(&b'>') {
        return Err(PathError::Syntax);
    }
    // RFC 5321 section 4.5.3.1: local part 64, domain 255, path 256 octets with brackets.
    if local_len > MAX_LOCAL_PART || domain_len > MAX_DOMAIN || i + 1 > MAX_PATH {
        return Err(PathError::TooLong);
    }
    Ok((&s[start..i], &s[i + 1..]))
}

/// Character classes of the path grammar, one table lookup per byte on the hot path.
const ATEXT: u8 = 1;
/// Letters, digits and '-' (`Ldh-str`).
const LDH: u8 = 2;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        // RFC 5322 atext.
        let mut special = false;
        let mut i = 0;
        let specials = b"!#$%&'*+-/=?^_`{|}~";
        while i < specials.len() {
            special |= specials[i] == c;
            i += 1;
        }
        if alnum || special {
            table[b] |= ATEXT;
        }
        if alnum || c == b'-' {
            table[b] |= LDH;
        }
        b += 1;
    }
    table
};

/// RFC 5322 atext, the characters of an unquoted local part.
#[inline]
fn is_atext(b: u8) -> bool {
    CLASSES[b as usize] & ATEXT != 0
}

/// Letters, digits and hyphen: the characters of a domain label.
#[inline]
fn is_ldh(b: u8) -> bool {
    CLASSES[b as usize] & LDH != 0
}

/// Length of `Local-part = Dot-string / Quoted-string` at the start of `s`.
fn local_part_len(s: &[u8]) -> Result<usize, PathError> {
    if s.first() == Some(&b'"') {
        let mut i = 1;
        loop {
            match s.get(i) {
                Some(b'"') => {
                    return if i > 1 {
                        Ok(i + 1)
                    } else {
                        Err(PathError::Syntax)
                    };
                }
                // quoted-pairSMTP = "\" %d32-126
                Some(b'\\') => match s.get(i + 1) {
                    Some(32..=126) => i += 2,
                    _ => return Err(PathError::Syntax),
                },
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126
                Some(32..=126) => i += 1,
                _ => return Err(PathError::Syntax),
            }
        }
    }
    // Dot-string = Atom *("." Atom): no leading, trailing or doubled dot.
    let mut i = 0;
    loop {
        let atom = s[i..].iter().take_while(|&&b| is_atext(b)).count();
        if atom == 0 {
            return Err(PathError::Syntax);
        }
        i += atom;
        if s.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Ok(i);
        }
    }
}

/// Length of `Domain = sub-domain *("." sub-domain)` at the start of `s`, where
/// `sub-domain = Let-dig [Ldh-str]` (no leading or trailing hyphen).
fn domain_len(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let label = s[i..].iter().take_while(|&&b| is_ldh(b)).count();
        if label == 0 || s[i] == b'-' || s[i + label - 1] == b'-' {
            return None;
        }
        i += label;
        if s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) {
            i += 1;
        } else {
            return Some(i);
        }
    }
}

/// Length of an address literal `[...]` at the start of `s`. Its content is checked only
/// as RFC 5321's General-address-literal allows (dcontent, %d33-90 / %d94-126): such a
/// domain is never served here, so its exact form does not change any answer.
fn address_literal_len(s: &[u8]) -> Option<usize> {
    let inner = s[1..]
        .iter()
        .take_while(|&&b| matches!(b, 33..=90 | 94..=126))
        .count();
    (inner > 0 && s.get(1 + inner) == Some(&b']')).then_some(inner + 2)
}

/// One ESMTP parameter: its keyword and its value, if any.
type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// Iterates the `SP keyword[=value]` parameters after a path. An empty remainder has none;
/// anything else must start with a space.
fn params(
    rest: &[u8],
) -> Result<impl Iterator<Item = Result<Param<'_>, CommandError>>, CommandError> {
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(CommandError::BadParameter);
    }
    Ok(rest
        .split(|&b| b == b' ')
        .filter(|p| !p.is_empty())
        .map(|param| {
            let (keyword, value) = match param.iter().position(|&b| b == b'=') {
                Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
                None => (param, None),
            };
            // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
            let keyword_ok = keyword.first().is_some_and(u8::is_ascii_alphanumeric)
                && keyword
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-');
            // esmtp-value = 1*(%d33-60 / %d62-126)
            let value_ok = value.is_none_or(|v| !v.is_empty() && !v.contains(&b'='));
            if keyword_ok && value_ok {
                Ok((keyword, value))
            } else {
                Err(CommandError::BadParameter)
            }
        }))
}

fn parse_mail_params(rest: &[u8]) -> Result<MailParams, CommandError> {
    let mut out = MailParams::default();
    for param in params(rest)? {
        let (keyword, value) = param?;
        if keyword.eq_ignore_ascii_case(b"SIZE") {
            let value = value.ok_or(CommandError::BadParameter)?;
            if out.size.is_some() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
                return Err(CommandError::BadParameter);
            }
            let size = value.iter().try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            out.size = Some(size.ok_or(CommandError::BadParameter)?);
        } else if keyword.eq_ignore_ascii_case(b"BODY") {
            let value = value.ok_or(CommandError::BadParameter)?;
            let body = if value.eq_ignore_ascii_case(b"7BIT") {
                Body::SevenBit
            } else if value.eq_ignore_ascii_case(b"8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(CommandError::BadParameter);
            };
            if out.body.replace(body).is_some() {
                return Err(CommandError::BadParameter);
            }
        } else {
            return Err(CommandError::UnknownParameter);
        }
    }
    Ok(out)
}

impl Command<'_> {
    /// Appends the command's canonical line, CRLF included, to `out`: what a client
    /// sends, and what [`parse_command`] turns back into the same command.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Command::Ehlo { domain } => {
                out.extend_from_slice(b"EHLO ");
                out.extend_from_slice(domain);
            }
            Command::Helo { domain } => {
                out.extend_from_slice(b"HELO ");
                out.extend_from_slice(domain);
            }
            Command::Mail { kind, from, params } => {
                out.extend_from_slice(kind.verb().as_bytes());
                out.extend_from_slice(b" FROM:<");
                if let ReversePath::Mailbox(mailbox) = from {
                    out.extend_from_slice(mailbox);
                }
                out.push(b'>');
                if let Some(size) = params.size {
                    out.extend_from_slice(b" SIZE=");
                    out.extend_from_slice(size.to_string().as_bytes());
                }
                match params.body {
                    Some(Body::SevenBit) => out.extend_from_slice(b" BODY=7BIT"),
                    Some(Body::EightBitMime) => out.extend_from_slice(b" BODY=8BITMIME"),
                    None => {}
                }
            }
            Command::Rcpt { to } => {
                out.extend_from_slice(b"RCPT TO:<");
                match to {
                    ForwardPath::Postmaster => out.extend_from_slice(b"Postmaster"),
                    ForwardPath::Mailbox(mailbox) => out.extend_from_slice(mailbox),
                }
                out.push(b'>');
            }
            Command::Data => out.extend_from_slice(b"DATA"),
            Command::Rset => out.extend_from_slice(b"RSET"),
            Command::Noop => out.extend_from_slice(b"NOOP"),
            Command::Quit => out.extend_from_slice(b"QUIT"),
            Command::Vrfy => out.extend_from_slice(b"VRFY postmaster"),
            Command::Help => out.extend_from_slice(b"HELP"),
            Command::StartTls => out.extend_from_slice(b"STARTTLS"),
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(kind: TransactionKind, from: &[u8], params: MailParams) -> Command<'_> {
        Command::Mail {
            kind,
            from: ReversePath::Mailbox(from),
            params,
        }
    }

    #[test]
    fn parses_every_command() {
        use TransactionKind::*;
        let long_local = format!("RCPT TO:<{}@x.org>", "a".repeat(64));
        let cases: Vec<(&[u8], Result<Command<'_>, CommandError>)> = vec![
            (
                b"EHLO client.example",
                Ok(Command::Ehlo {
                    domain: b"client.example",
                }),
            ),
            (
                b"ehlo [127.0.0.1]",
                Ok(Command::Ehlo {
                    domain: b"[127.0.0.1]",
                }),
            ),
            (b"HELO x", Ok(Command::Helo { domain: b"x" })),
            (b"EHLO", Err(CommandError::HeloSyntax)),
            (b"EHLO   ", Err(CommandError::HeloSyntax)),
            (b"HELO", Err(CommandError::HeloSyntax)),
            (
                b"BULK FROM:<Friend@public.com>",
                Ok(mail(Bulk, b"Friend@public.com", MailParams::default())),
            ),
            (
                b"bulk from:<a@b.c> SIZE=1000 BODY=8BITMIME",
                Ok(mail(
                    Bulk,
                    b"a@b.c",
                    MailParams {
                        size: Some(1000),
                        body: Some(Body::EightBitMime),
                    },
                )),
            ),
            (
                b"MAIL FROM: <a@b.c> body=7bit",
                Ok(mail(
                    Mail,
                    b"a@b.c",
                    MailParams {
                        size: None,
                        body: Some(Body::SevenBit),
                    },
                )),
            ),
            (
                b"MAIL FROM:<>",
                Ok(Command::Mail {
                    kind: Mail,
                    from: ReversePath::Null,
                    params: MailParams::default(),
                }),
            ),
            (
                b"MAIL FROM:<@relay.one,@relay.two:joe@x.org>",
                Ok(mail(Mail, b"joe@x.org", MailParams::default())),
            ),
            (
                b"MAIL FROM:<\"joe smith\"@x.org>",
                Ok(mail(Mail, b"\"joe smith\"@x.org", MailParams::default())),
            ),
            (
                b"MAIL FROM:<a@[192.0.2.1]>",
                Ok(mail(Mail, b"a@[192.0.2.1]", MailParams::default())),
            ),
            (b"MAIL FROM:a@b.c", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a@b.c", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a.@b.c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a..b@b.c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a@-b.c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a@b-.c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a@b..c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a@>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<@b.c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<\"\"@b.c>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a b@c.d>", Err(CommandError::BadSender)),
            (b"MAIL FROM:<a@b.c>SIZE=1", Err(CommandError::BadParameter)),
            (
                b"MAIL FROM:<a@b.c> SIZE=abc",
                Err(CommandError::BadParameter),
            ),
            (b"MAIL FROM:<a@b.c> SIZE=", Err(CommandError::BadParameter)),
            (b"MAIL FROM:<a@b.c> SIZE", Err(CommandError::BadParameter)),
            (
                b"MAIL FROM:<a@b.c> SIZE=1 SIZE=2",
                Err(CommandError::BadParameter),
            ),
            (
                b"MAIL FROM:<a@b.c> SIZE=99999999999999999999",
                Err(CommandError::BadParameter),
            ),
            (
                b"MAIL FROM:<a@b.c> BODY=9BIT",
                Err(CommandError::BadParameter),
            ),
            (
                b"MAIL FROM:<a@b.c> SMTPUTF8",
                Err(CommandError::UnknownParameter),
            ),
            (
                b"MAIL FROM:<a@b.c> RET=HDRS",
                Err(CommandError::UnknownParameter),
            ),
            (b"MAIL FROM:<a@b.c> =x", Err(CommandError::BadParameter)),
            (b"MAIL TO:<a@b.c>", Err(CommandError::MailSyntax)),
            (b"MAIL", Err(CommandError::MailSyntax)),
            (b"BULK", Err(CommandError::MailSyntax)),
            (
                b"RCPT TO:<user1@example.com>",
                Ok(Command::Rcpt {
                    to: ForwardPath::Mailbox(b"user1@example.com"),
                }),
            ),
            (
                b"rcpt to:<Ann.Lee+news@Example.COM>",
                Ok(Command::Rcpt {
                    to: ForwardPath::Mailbox(b"Ann.Lee+news@Example.COM"),
                }),
            ),
            (
                b"RCPT TO:<postmaster>",
                Ok(Command::Rcpt {
                    to: ForwardPath::Postmaster,
                }),
            ),
            (
                b"RCPT TO:<Postmaster@x.org>",
                Ok(Command::Rcpt {
                    to: ForwardPath::Mailbox(b"Postmaster@x.org"),
                }),
            ),
            (
                b"RCPT TO:<a@b.c> NOTIFY=NEVER",
                Err(CommandError::UnknownParameter),
            ),
            (b"RCPT TO:<a@b.c> x=", Err(CommandError::BadParameter)),
            (
                b"RCPT TO:<a@b.c> ",
                Ok(Command::Rcpt {
                    to: ForwardPath::Mailbox(b"a@b.c"),
                }),
            ),
            (b"RCPT TO:<a@b.c>x", Err(CommandError::BadParameter)),
            (b"RCPT TO:<>", Err(CommandError::BadRecipient)),
            (b"RCPT TO:a@b.c", Err(CommandError::BadRecipient)),
            (b"RCPT FROM:<a@b.c>", Err(CommandError::RcptSyntax)),
            (b"RCPT", Err(CommandError::RcptSyntax)),
            (
                long_local.as_bytes(),
                Ok(Command::Rcpt {
                    to: ForwardPath::Mailbox(&long_local.as_bytes()[9..long_local.len() - 1]),
                }),
            ),
            (b"DATA", Ok(Command::Data)),
            (b"data ", Ok(Command::Data)),
            (b"DATA now", Err(CommandError::NoArguments)),
            (b"RSET", Ok(Command::Rset)),
            (b"RSET x", Err(CommandError::NoArguments)),
            (b"QUIT", Ok(Command::Quit)),
            (b"NOOP", Ok(Command::Noop)),
            (b"NOOP anything at all", Ok(Command::Noop)),
            (b"HELP", Ok(Command::Help)),
            (b"HELP BULK", Ok(Command::Help)),
            (b"VRFY ann", Ok(Command::Vrfy)),
            (b"VRFY", Err(CommandError::VrfySyntax)),
            (b"EXPN list", Err(CommandError::NotImplemented)),
            (b"AUTH PLAIN", Err(CommandError::NotImplemented)),
            (b"STARTTLS", Ok(Command::StartTls)),
            (b"starttls", Ok(Command::StartTls)),
            (b"StartTls  ", Ok(Command::StartTls)),
            (b"STARTTLS now", Err(CommandError::StartTlsParameters)),
            (b"STARTTLSX", Err(CommandError::UnknownCommand)),
            (b"STARTTL", Err(CommandError::UnknownCommand)),
            (b"STAR", Err(CommandError::UnknownCommand)),
            (b"STARX", Err(CommandError::UnknownCommand)),
            (b"RCPTX TO:<a@b.c>", Err(CommandError::UnknownCommand)),
            (b"GET / HTTP/1.1", Err(CommandError::UnknownCommand)),
            (b"", Err(CommandError::UnknownCommand)),
            (b"QU", Err(CommandError::UnknownCommand)),
            (b"NOOP\0", Err(CommandError::BadByte)),
            (b"NOOP\r", Err(CommandError::BadByte)),
            (b"RCPT TO:<\xc3\xa9@b.c>", Err(CommandError::BadByte)),
            (b"HELO\tx", Err(CommandError::BadByte)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_command(input),
                expected,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Lines the fast RCPT path takes or leaves to the full grammar; either way
    /// `parse_command` answers as the full grammar does.
    #[test]
    fn fast_rcpt_path_takes_only_plain_paths() {
        let local_64 = format!("RCPT TO:<{}@x.org>", "a".repeat(64));
        let local_65 = format!("RCPT TO:<{}@x.org>", "a".repeat(65));
        let domain = format!("{}.{}.{}", "d".repeat(63), "d".repeat(63), "d".repeat(61));
        let path_256 = format!("RCPT TO:<{}@{domain}>", "l".repeat(64));
        let path_257 = format!("RCPT TO:<{}@{domain}d>", "l".repeat(64));
        let cases: Vec<(&[u8], bool)> = vec![
            (b"RCPT TO:<user1@example.com>", true),
            (b"rcpt to:<Ann.Lee+news@Example.COM>", true),
            (b"RcPt To:<a@b>", true),
            (b"RCPT TO:<a!#$%&'*+-/=?^_`{|}~@x-1.y--2.z>", true),
            (local_64.as_bytes(), true),
            (path_256.as_bytes(), true),
            (local_65.as_bytes(), false),
            (path_257.as_bytes(), false),
            (b"RCPT TO:<a@b.c> ", false),
            (b"RCPT TO:<a@b.c> NOTIFY=NEVER", false),
            (b"RCPT TO:<a@b.c>x", false),
            (b"RCPT TO: <a@b.c>", false),
            (b"RCPT TO:<postmaster>", false),
            (b"RCPT TO:<\"a b\"@x.org>", false),
            (b"RCPT TO:<@r.example:a@x.org>", false),
            (b"RCPT TO:<a@[192.0.2.1]>", false),
            (b"RCPT TO:<.a@b.c>", false),
            (b"RCPT TO:<a.@b.c>", false),
            (b"RCPT TO:<a..b@b.c>", false),
            (b"RCPT TO:<a@-b.c>", false),
            (b"RCPT TO:<a@b-.c>", false),
            (b"RCPT TO:<a@b->", false),
            (b"RCPT TO:<a@b..c>", false),
            (b"RCPT TO:<a@b.>", false),
            (b"RCPT TO:<a@.b>", false),
            (b"RCPT TO:<a@b@c>", false),
            (b"RCPT TO:<@b.c>", false),
            (b"RCPT TO:<a@>", false),
            (b"RCPT TO:<>", false),
            (b"RCPT TO:<a@b.c", false),
            (b"RCPT\0TO:<a@b.c>", false),
            (b"RCPT TO\x1a<a@b.c>", false),
            (b"RCPT TO:<a@b\x80.c>", false),
            (b"MAIL FROM:<a@b.c>", false),
        ];
        for (line, fast) in cases {
            let shown = String::from_utf8_lossy(line);
            let taken = rcpt_fast(line).is_some_and(|fast| fast.end == line.len());
            assert_eq!(taken, fast, "{shown}");
            assert_eq!(parse_command(line), parse_command_general(line), "{shown}");
        }
    }

    #[test]
    fn path_limits_follow_rfc5321() {
        let local_65 = format!("RCPT TO:<{}@x.org>", "a".repeat(65));
        assert_eq!(
            parse_command(local_65.as_bytes()),
            Err(CommandError::RecipientTooLong)
        );
        let label = "a".repeat(60);
        let domain = [label.as_str(); 5].join(".");
        let long_domain = format!("MAIL FROM:<a@{domain}>");
        assert_eq!(
            parse_command(long_domain.as_bytes()),
            Err(CommandError::SenderTooLong)
        );
        // 64 + 1 + 189 = 254 octets of mailbox, 256 with brackets: the largest path.
        let mailbox = format!(
            "{}@{}.{}.{}",
            "l".repeat(64),
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(mailbox.len(), 254);
        let line = format!("RCPT TO:<{mailbox}>");
        assert!(parse_command(line.as_bytes()).is_ok());
        let line = format!("RCPT TO:<{mailbox}d>");
        assert_eq!(
            parse_command(line.as_bytes()),
            Err(CommandError::RecipientTooLong)
        );
    }

    #[test]
    fn every_error_has_a_reply_with_its_code() {
        let expected = [
            (CommandError::UnknownCommand, 500),
            (CommandError::NotImplemented, 502),
            (CommandError::BadByte, 500),
            (CommandError::HeloSyntax, 501),
            (CommandError::MailSyntax, 501),
            (CommandError::RcptSyntax, 501),
            (CommandError::VrfySyntax, 501),
            (CommandError::NoArguments, 501),
            (CommandError::BadSender, 501),
            (CommandError::BadRecipient, 501),
            (CommandError::SenderTooLong, 501),
            (CommandError::RecipientTooLong, 501),
            (CommandError::UnknownParameter, 555),
            (CommandError::BadParameter, 501),
            (CommandError::StartTlsParameters, 501),
        ];
        for (error, code) in expected {
            assert_eq!(error.reply().code(), code, "{error:?}");
        }
        assert!(
            CommandError::BadSender
                .reply()
                .render(&Default::default())
                .starts_with("501 5.1.7 ")
        );
        assert!(
            CommandError::BadRecipient
                .reply()
                .render(&Default::default())
                .starts_with("501 5.1.3 ")
        );
        assert!(
            CommandError::UnknownParameter
                .reply()
                .render(&Default::default())
                .starts_with("555 5.5.4 ")
        );
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let commands = [
            Command::Ehlo {
                domain: b"c.example",
            },
            mail(
                TransactionKind::Bulk,
                b"x@y.z",
                MailParams {
                    size: Some(5),
                    body: None,
                },
            ),
            Command::Rcpt {
                to: ForwardPath::Postmaster,
            },
            Command::Data,
            Command::Quit,
            Command::StartTls,
        ];
        for command in commands {
            let mut line = Vec::new();
            command.encode(&mut line);
            assert!(line.ends_with(b"\r\n"));
            assert_eq!(parse_command(&line[..line.len() - 2]), Ok(command));
        }
    }
}
