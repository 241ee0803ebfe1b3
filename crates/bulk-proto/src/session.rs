//! The server side of one SMTP session: bytes in, replies and events out.
//!
//! [`Session::advance`] consumes every complete command in a buffer and queues their
//! replies. A `RCPT` cannot be answered at once: its verdict comes from the policy backend,
//! and one backend call should serve every RCPT of a pipelined read. So the session queues
//! the address (see [`Session::pending`]) and a placeholder reply, and goes on with the next
//! command. It stops with [`Event::NeedVerdicts`] only when a command depends on those
//! verdicts (DATA needs to know whether any recipient was accepted; RSET, MAIL, BULK, EHLO
//! and HELO end the transaction they belong to). The caller then looks the batch up and calls
//! [`Session::resolve`], and replies go out in command order whatever was pending (RFC 2920).

use bulk_types::{AddressBatch, Verdict};

use crate::command::{
    Command, ForwardPath, ReversePath, TransactionKind, parse_command, rcpt_fast,
};
use crate::data::{DataReceiver, DataVerdict};
use crate::limits::{self, MAX_COMMAND_LINE};
use crate::reply::{Closing, QueueId, Reply, ServerIdentity, replies};

/// RCPTs a batch is sized for up front; more just grow the buffers.
const RCPT_BATCH_HINT: usize = 16;

/// Harvest-resistant mode (docs/protocol.md, "Harvest-resistant mode"): unknown and
/// opted-out mailboxes get the same answer. The delays that go with it are the server's:
/// they count unknown mailboxes per client address across sessions, which one session
/// cannot see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarvestConfig {}

/// STARTTLS (RFC 3207): whether the session offers it, and whether it requires it before
/// a transaction. The TLS itself is the caller's: the session only answers STARTTLS, stops
/// at it ([`Event::StartTls`]) and starts over once told the handshake succeeded
/// ([`Session::tls_started`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsPolicy {
    /// No TLS: STARTTLS is not advertised and is answered `502 5.5.1`, as Postfix answers
    /// it when TLS is off.
    #[default]
    Off,
    /// STARTTLS is advertised (until TLS is active) and accepted.
    Offered,
    /// As `Offered`, and MAIL or BULK before TLS is refused with `530 5.7.0`.
    Required,
}

/// Per-session limits and modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// RCPT commands per transaction; those beyond get `452 4.5.3`.
    pub max_recipients: u32,
    /// Largest message, in octets (also advertised as EHLO `SIZE`).
    pub max_message_size: u64,
    /// Protocol errors per session; the one that reaches it is followed by `421 4.7.0`.
    pub max_errors: u32,
    /// Harvest-resistant mode, off when `None`.
    pub harvest: Option<HarvestConfig>,
    /// Apply recipients' preferences to MAIL transactions too: an opted-out mailbox is
    /// refused under MAIL as under BULK, for a site that treats all its incoming mail as
    /// bulk (as `policyd --bulk every` or a Postfix access map does). Off by default: under
    /// MAIL an opted-out mailbox still receives ordinary mail.
    pub preferences_for_mail: bool,
    /// Keep message bodies for the caller (a spool); a discarding sink only needs sizes.
    pub keep_message: bool,
    /// With `keep_message`: the most message content the session holds. Once it holds this
    /// many octets, [`Session::advance`] stops with [`Event::Content`] for the caller to
    /// take them ([`Session::swap_content`]), so a large message never sits whole in
    /// memory. At least 1 (0 counts as 1); `usize::MAX` keeps every message whole.
    pub content_chunk: usize,
    /// STARTTLS offered, required or not (the caller must then be able to run TLS).
    pub tls: TlsPolicy,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_recipients: limits::DEFAULT_MAX_RECIPIENTS,
            max_message_size: limits::DEFAULT_MAX_MESSAGE_SIZE,
            max_errors: limits::DEFAULT_MAX_ERRORS,
            harvest: None,
            preferences_for_mail: false,
            keep_message: false,
            content_chunk: limits::DEFAULT_CONTENT_CHUNK,
            tls: TlsPolicy::Off,
        }
    }
}

/// Why [`Session::advance`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Every complete command was consumed: flush the replies, then read more bytes.
    NeedInput,
    /// The next command depends on pending RCPT verdicts: look up [`Session::pending`],
    /// call [`Session::resolve`], then call `advance` again with the unconsumed bytes.
    NeedVerdicts,
    /// A message ended and passed every check: store [`Session::message`] (its content
    /// after the parts already taken at [`Event::Content`]), then call
    /// [`Session::delivered`].
    Message,
    /// With [`SessionConfig::keep_message`]: the session holds
    /// [`SessionConfig::content_chunk`] octets of the message in progress. Take them with
    /// [`Session::swap_content`] (or the session stops here again), then call `advance`
    /// again with the unconsumed bytes. They are not accepted yet: the message may still
    /// be refused at its end ([`Event::MessageRefused`]) or never end.
    Content,
    /// A message ended and was refused (its reply is queued, the transaction is over):
    /// drop whatever was taken of it at [`Event::Content`], then call `advance` again with
    /// the unconsumed bytes.
    MessageRefused,
    /// The client sent STARTTLS and was answered `220 2.0.0 Ready to start TLS`: resolve
    /// what is pending, flush the replies, **discard whatever input follows the STARTTLS
    /// line** (plaintext the client pipelined after it, which must never be executed as if
    /// it had come under TLS: RFC 3207 section 6, the bug class of CVE-2011-0411), run the
    /// TLS handshake, then call [`Session::tls_started`]. Until then the session consumes
    /// whatever it is given without executing it, and stops here again.
    StartTls,
    /// The session is over: resolve what is pending, flush the replies, close.
    Close,
}

/// A received message and its envelope, ready for the sink.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// BULK or MAIL.
    pub kind: TransactionKind,
    /// The reverse-path without brackets; empty for `<>`.
    pub sender: &'a [u8],
    /// Accepted recipients, in RCPT order.
    pub recipients: &'a AddressBatch,
    /// The content, unstuffed, if the session keeps messages (empty otherwise): what was
    /// not taken at [`Event::Content`] yet, the whole content for a message that fits one
    /// chunk.
    pub body: &'a [u8],
    /// Size of the content in octets.
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Greeted {
    No,
    Helo,
    Ehlo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Command,
    /// Inside an over-long command line: discard up to its LF, then answer once.
    Discarding,
    Data,
    /// After the `220` to STARTTLS, until the caller reports the TLS handshake done: every
    /// byte is plaintext sent after STARTTLS, consumed and never executed.
    StartingTls,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Ready(Reply),
    /// A resolved RCPT: its reply line, CRLF included ([`RcptAnswer::line`]), written out
    /// in one copy.
    Line(&'static PaddedLine),
    /// A RCPT waiting for its verdict; pending slots are resolved in order.
    Pending,
    /// `RCPT TO:<Postmaster>` in a MAIL transaction behind pending RCPTs: accepted without
    /// a lookup, but joins the envelope in its place, after the RCPTs before it.
    PendingPostmaster,
}

/// The transaction opened by MAIL FROM or BULK FROM.
#[derive(Debug)]
struct Transaction {
    kind: TransactionKind,
    /// RCPT commands answered (or pending), refused ones included: the recipient limit
    /// counts commands, so a sender cannot probe without bound in one transaction.
    rcpt_commands: u32,
}

/// One SMTP session, server side. Owns no socket: see the module docs for the protocol
/// between it and its caller.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    greeted: Greeted,
    mode: Mode,
    transaction: Option<Transaction>,
    /// The envelope of the open transaction (kept apart from `transaction` so their
    /// buffers are reused from one transaction to the next).
    sender: Vec<u8>,
    recipients: AddressBatch,
    body: Vec<u8>,
    data: DataReceiver,
    replies: Vec<Slot>,
    /// Addresses of the pending RCPTs, in order, and the kind of their transaction.
    pending: AddressBatch,
    pending_kind: TransactionKind,
    errors: u32,
    /// The client ended the session with QUIT (not a `421`).
    quit: bool,
    /// The TLS handshake after STARTTLS succeeded.
    tls_active: bool,
}

/// What a [`Session`] needs from whoever runs it, besides bytes: the server's
/// connection (a policy backend with a timeout, a spool), `simulate` (a backend polled at
/// once) and the benches each implement it; [`Session::feed`] calls it.
pub trait SessionHost {
    /// Looks up `session.pending()` (never empty here) and hands the verdicts to
    /// [`Session::resolve`]: `Err(())` when they cannot be had, which the session answers
    /// `451 4.3.0`.
    fn resolve(&mut self, session: &mut Session) -> impl std::future::Future<Output = ()>;
    /// Takes the message that just ended ([`Session::message`]) and tells the session how
    /// it went ([`Session::delivered`]).
    fn deliver(&mut self, session: &mut Session) -> impl std::future::Future<Output = ()>;
    /// Takes the content the session holds of the message in progress
    /// ([`Session::swap_content`]), at [`Event::Content`]. The default drops it: right for
    /// hosts that do not keep messages, which never get here.
    fn content(&mut self, session: &mut Session) -> impl std::future::Future<Output = ()> {
        session.swap_content(&mut Vec::new());
        std::future::ready(())
    }
    /// A message was refused at its end ([`Event::MessageRefused`]): drops what
    /// [`content`](Self::content) took of it. The default does nothing.
    fn refused(&mut self, session: &mut Session) -> impl std::future::Future<Output = ()> {
        let _ = session;
        std::future::ready(())
    }
}

impl Session {
    /// A new session; call [`greet`](Self::greet) before anything else.
    pub fn new(config: SessionConfig) -> Self {
        Session {
            config,
            greeted: Greeted::No,
            mode: Mode::Command,
            transaction: None,
            sender: Vec::new(),
            recipients: AddressBatch::new(),
            body: Vec::new(),
            data: DataReceiver::new(config.max_message_size),
            replies: Vec::new(),
            pending: AddressBatch::new(),
            pending_kind: TransactionKind::Mail,
            quit: false,
            errors: 0,
            tls_active: false,
        }
    }

    /// Queues the `220` greeting.
    pub fn greet(&mut self) {
        self.replies.push(Slot::Ready(Reply::Greeting));
    }

    /// Ends the session with a `421` for `why` (idle timeout, shutdown). Pending RCPTs keep
    /// their place before it.
    pub fn close(&mut self, why: Closing) {
        if self.mode != Mode::Closed {
            self.replies.push(Slot::Ready(Reply::Closing(why)));
            self.mode = Mode::Closed;
        }
    }

    /// Whether the session has ended; the caller flushes and closes.
    pub fn is_closed(&self) -> bool {
        self.mode == Mode::Closed
    }

    /// Whether the session ended because the client sent QUIT, rather than with a `421`
    /// (after which a client may well still be sending).
    pub fn ended_by_quit(&self) -> bool {
        self.quit
    }

    /// Whether a transaction is open (between MAIL/BULK and the end of DATA or RSET).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Whether the session is reading message content (after `354`, before the end of the
    /// message): the caller's DATA deadline runs.
    pub fn in_data(&self) -> bool {
        self.mode == Mode::Data
    }

    /// Whether the session is inside an over-long command line, discarding it up to its
    /// LF: it consumes every byte of that line, so the caller's buffer does not show that a
    /// line is in progress, and its line deadline still runs.
    pub fn discarding_line(&self) -> bool {
        self.mode == Mode::Discarding
    }

    /// Whether the session answered STARTTLS with `220` and waits for the caller's TLS
    /// handshake ([`Event::StartTls`]): input given now is discarded, never executed.
    pub fn starting_tls(&self) -> bool {
        self.mode == Mode::StartingTls
    }

    /// Whether the session is under TLS (STARTTLS and its handshake succeeded).
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts over under TLS, as
    /// RFC 3207 section 4.2 requires. It forgets everything the client said before (its
    /// EHLO or HELO, any open transaction), sends no new greeting, and expects EHLO again;
    /// that EHLO no longer offers STARTTLS. Does nothing unless the session is
    /// [`starting_tls`](Self::starting_tls). Protocol errors stay counted: the limit is per
    /// connection, not per TLS state.
    pub fn tls_started(&mut self) {
        if self.mode != Mode::StartingTls {
            return;
        }
        self.reset_transaction();
        self.greeted = Greeted::No;
        self.tls_active = true;
        self.mode = Mode::Command;
    }

    /// Protocol errors counted so far.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Runs every complete command (and message content) of `input` through the session,
    /// asking `host` for what it cannot do itself: the verdicts of the pending RCPTs (one
    /// call per group of commands that needs them, and one at the end for the RCPTs still
    /// pending) and the delivery of each message that ended. Returns how many bytes were
    /// consumed; the rest must be given again with what follows. The replies wait in the
    /// session for [`flush`](Self::flush).
    ///
    /// This is the one loop over [`advance`](Self::advance) that the server's connections,
    /// `simulate` and the benches all run, each with its own [`SessionHost`]. The future
    /// does no I/O of its own: it waits only where the host does.
    pub async fn feed<H: SessionHost>(&mut self, input: &[u8], host: &mut H) -> usize {
        let mut consumed = 0;
        loop {
            let (n, event) = self.advance(&input[consumed..]);
            consumed += n;
            match event {
                Event::NeedInput | Event::Close | Event::StartTls => break,
                Event::NeedVerdicts => self.ask_verdicts(host).await,
                Event::Message => host.deliver(self).await,
                Event::Content => host.content(self).await,
                Event::MessageRefused => host.refused(self).await,
            }
        }
        self.ask_verdicts(host).await;
        consumed
    }

    /// Asks `host` for the pending RCPTs' verdicts, if there are any.
    pub async fn ask_verdicts<H: SessionHost>(&mut self, host: &mut H) {
        if !self.pending().is_empty() {
            host.resolve(self).await;
        }
    }

    /// Consumes commands (or message content) from `input`. Returns how many bytes were
    /// consumed and why it stopped. Bytes not consumed must be given again, with what
    /// follows them, on the next call. Never blocks, never panics.
    pub fn advance(&mut self, input: &[u8]) -> (usize, Event) {
        let mut pos = 0;
        loop {
            match self.mode {
                Mode::Closed => return (input.len(), Event::Close),
                // Entered in this call: stop right after the STARTTLS line, and leave what
                // follows it unconsumed, for the caller to see (and log) as it discards it.
                Mode::StartingTls if pos > 0 => return (pos, Event::StartTls),
                // Called again before the handshake: plaintext after STARTTLS is consumed
                // and dropped, never executed, whatever the caller does with it.
                Mode::StartingTls => return (input.len(), Event::StartTls),
                Mode::Data => {
                    let (n, ended) = self.feed_content(&input[pos..]);
                    pos += n;
                    if !ended {
                        if self.config.keep_message && self.body.len() >= self.chunk() {
                            return (pos, Event::Content);
                        }
                        if pos < input.len() {
                            continue;
                        }
                        return (pos, Event::NeedInput);
                    }
                    self.mode = Mode::Command;
                    match self.data.verdict() {
                        DataVerdict::Deliver => return (pos, Event::Message),
                        // A refused message is an answer about content, not a protocol
                        // error of the session: it does not count.
                        DataVerdict::Refuse(reply) => {
                            self.reset_transaction();
                            self.reply(reply);
                            return (pos, Event::MessageRefused);
                        }
                    }
                }
                Mode::Discarding => match memchr::memchr(b'\n', &input[pos..]) {
                    None => return (input.len(), Event::NeedInput),
                    Some(at) => {
                        pos += at + 1;
                        self.mode = Mode::Command;
                        self.protocol_error(replies::COMMAND_TOO_LONG);
                    }
                },
                Mode::Command => {
                    let rest = &input[pos..];
                    // The common RCPT, CRLF included, in one pass: no search for the line
                    // end, no second scan. Anything else, or a RCPT in another shape, takes
                    // the general path below, which answers these lines alike.
                    if let Some(fast) = rcpt_fast(rest)
                        && rest.get(fast.end..fast.end + 2) == Some(b"\r\n")
                    {
                        pos += fast.end + 2;
                        self.rcpt(ForwardPath::Mailbox(fast.mailbox), fast.normal);
                        continue;
                    }
                    let Some(lf) = memchr::memchr(b'\n', rest) else {
                        // 512 octets without LF cannot become a line of at most 512 octets
                        // with its CRLF: stop buffering it (limits before buffering).
                        if rest.len() >= MAX_COMMAND_LINE {
                            self.mode = Mode::Discarding;
                            return (input.len(), Event::NeedInput);
                        }
                        return (pos, Event::NeedInput);
                    };
                    if lf + 1 > MAX_COMMAND_LINE {
                        pos += lf + 1;
                        self.protocol_error(replies::COMMAND_TOO_LONG);
                        continue;
                    }
                    if lf == 0 || rest[lf - 1] != b'\r' {
                        pos += lf + 1;
                        self.protocol_error(replies::BARE_LF);
                        continue;
                    }
                    match parse_command(&rest[..lf - 1]) {
                        Ok(command) => {
                            if !self.pending.is_empty() && depends_on_verdicts(&command) {
                                return (pos, Event::NeedVerdicts);
                            }
                            pos += lf + 1;
                            self.apply(command);
                        }
                        Err(error) => {
                            pos += lf + 1;
                            self.protocol_error(error.reply());
                        }
                    }
                }
            }
        }
    }

    /// [`SessionConfig::content_chunk`], at least 1.
    fn chunk(&self) -> usize {
        self.config.content_chunk.max(1)
    }

    /// Feeds message content to the receiver. A session that keeps messages feeds at most
    /// the room left in its chunk, so the content it holds stays within the chunk (plus
    /// one octet: unstuffing never makes content longer than its input, but a CR held back
    /// at the end of one input comes out with the next); the rest of `input` is left for
    /// the next call.
    fn feed_content(&mut self, input: &[u8]) -> (usize, bool) {
        if !self.config.keep_message {
            return self.data.feed(input, None);
        }
        let room = self.chunk().saturating_sub(self.body.len()).max(1);
        let piece = &input[..room.min(input.len())];
        self.data.feed(piece, Some(&mut self.body))
    }

    fn reply(&mut self, reply: Reply) {
        self.replies.push(Slot::Ready(reply));
    }

    /// Answers a protocol error and counts it; the error that reaches the limit ends the
    /// session. Policy refusals never come through here.
    fn protocol_error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.close(Closing::TooManyErrors);
        }
    }

    fn reset_transaction(&mut self) {
        self.transaction = None;
        self.sender.clear();
        self.recipients.clear();
        // Released, not cleared: a session between messages holds no content buffer (a
        // session that never keeps messages never had one).
        self.body = Vec::new();
    }

    fn apply(&mut self, command: Command<'_>) {
        match command {
            Command::Ehlo { .. } => {
                // EHLO and HELO reset any transaction (RFC 5321 section 4.1.4).
                self.reset_transaction();
                self.greeted = Greeted::Ehlo;
                self.reply(if self.config.tls == TlsPolicy::Off || self.tls_active {
                    Reply::Ehlo
                } else {
                    Reply::EhloStartTls
                });
            }
            Command::Helo { .. } => {
                self.reset_transaction();
                self.greeted = Greeted::Helo;
                self.reply(Reply::Helo);
            }
            Command::Mail { kind, from, params } => {
                if self.greeted == Greeted::No {
                    self.protocol_error(replies::NEED_HELO);
                } else if self.config.tls == TlsPolicy::Required && !self.tls_active {
                    self.protocol_error(replies::MUST_STARTTLS);
                } else if kind == TransactionKind::Bulk && self.greeted == Greeted::Helo {
                    self.protocol_error(replies::BULK_NEEDS_EHLO);
                } else if self.transaction.is_some() {
                    self.protocol_error(replies::NESTED_MAIL);
                } else if params
                    .size
                    .is_some_and(|size| size > self.config.max_message_size)
                {
                    self.reply(replies::MESSAGE_TOO_BIG);
                } else {
                    self.sender.clear();
                    if let ReversePath::Mailbox(mailbox) = from {
                        self.sender.extend_from_slice(mailbox);
                    }
                    self.transaction = Some(Transaction {
                        kind,
                        rcpt_commands: 0,
                    });
                    self.reply(replies::SENDER_OK);
                }
            }
            Command::Rcpt { to } => self.rcpt(to, false),
            Command::Data => {
                if self.transaction.is_none() {
                    let reply = if self.greeted == Greeted::No {
                        replies::NEED_HELO
                    } else {
                        replies::NEED_MAIL
                    };
                    self.protocol_error(reply);
                } else if self.recipients.is_empty() {
                    // Follows from refusals (all recipients refused is normal in bulk):
                    // not a protocol error.
                    self.reply(replies::NO_VALID_RECIPIENTS);
                } else {
                    self.data = DataReceiver::new(self.config.max_message_size);
                    self.body = Vec::new();
                    self.mode = Mode::Data;
                    self.reply(replies::START_DATA);
                }
            }
            Command::Rset => {
                self.reset_transaction();
                self.reply(replies::OK);
            }
            Command::Noop => self.reply(replies::OK),
            Command::Quit => {
                self.reply(replies::BYE);
                self.mode = Mode::Closed;
                self.quit = true;
            }
            Command::Vrfy => self.reply(replies::VRFY),
            Command::Help => self.reply(if self.config.tls == TlsPolicy::Off || self.tls_active {
                replies::HELP
            } else {
                replies::HELP_STARTTLS
            }),
            Command::StartTls => self.start_tls(),
        }
    }

    /// RCPT: counted against the recipient limit, answered at once (`<Postmaster>`, the
    /// limit, no transaction) or queued for a verdict. Inlined into the fast path of
    /// [`advance`](Self::advance), which every common RCPT takes. `normal`: the mailbox is
    /// known to hold no upper-case letter and no `+` ([`AddressBatch::push_normal`]).
    #[inline]
    fn rcpt(&mut self, to: ForwardPath<'_>, normal: bool) {
        let Some(transaction) = self.transaction.as_mut() else {
            let reply = if self.greeted == Greeted::No {
                replies::NEED_HELO
            } else {
                replies::NEED_MAIL
            };
            return self.protocol_error(reply);
        };
        if transaction.rcpt_commands >= self.config.max_recipients {
            return self.reply(replies::TOO_MANY_RECIPIENTS);
        }
        transaction.rcpt_commands += 1;
        let kind = transaction.kind;
        match to {
            ForwardPath::Postmaster => match kind {
                TransactionKind::Mail if self.pending.is_empty() => {
                    self.recipients.push(b"postmaster");
                    self.reply(replies::RCPT_OK);
                }
                // Keep envelope order independent of how reads split the input.
                TransactionKind::Mail => self.replies.push(Slot::PendingPostmaster),
                TransactionKind::Bulk => self.reply(replies::POSTMASTER_NO_BULK),
            },
            ForwardPath::Mailbox(mailbox) => {
                if self.pending.is_empty() {
                    // A session's first batch sizes the buffers once, instead of
                    // growing them by doubling RCPT after RCPT (idle sessions, which
                    // never get here, keep none).
                    self.pending.reserve(RCPT_BATCH_HINT, RCPT_BATCH_HINT * 32);
                    self.replies.reserve(RCPT_BATCH_HINT);
                    self.recipients
                        .reserve(RCPT_BATCH_HINT, RCPT_BATCH_HINT * 32);
                }
                if normal {
                    self.pending.push_normal(mailbox);
                } else {
                    self.pending.push(mailbox);
                }
                self.pending_kind = kind;
                self.replies.push(Slot::Pending);
            }
        }
    }

    /// STARTTLS (RFC 3207), allowed with or without EHLO and inside a transaction: the
    /// reset after the handshake ends the transaction anyway. Codes: 502 when TLS is off
    /// (Postfix's), 503 when TLS is already active (a command out of sequence; Postfix
    /// says 554 5.5.1).
    fn start_tls(&mut self) {
        if self.config.tls == TlsPolicy::Off {
            self.protocol_error(replies::NOT_IMPLEMENTED);
        } else if self.tls_active {
            self.protocol_error(replies::TLS_ALREADY_ACTIVE);
        } else {
            self.reply(replies::STARTTLS_READY);
            self.mode = Mode::StartingTls;
        }
    }

    /// The addresses of the RCPTs waiting for a verdict, in command order.
    pub fn pending(&self) -> &AddressBatch {
        &self.pending
    }

    /// Answers every pending RCPT: `Ok` with one verdict per address of
    /// [`pending`](Self::pending), in order, or `Err` when the backend failed or timed out
    /// (every pending RCPT then gets `451 4.3.0`). A missing verdict is treated as a failure
    /// of that one lookup, never as a guess.
    pub fn resolve(&mut self, verdicts: Result<&[Verdict], ()>) {
        if self.pending.is_empty() {
            return;
        }
        // With preferences applied to every transaction, MAIL's recipients are answered
        // as BULK's.
        let kind = match self.config.preferences_for_mail {
            true => TransactionKind::Bulk,
            false => self.pending_kind,
        };
        let harvest = self.config.harvest;
        // Accepted addresses join the envelope only if their transaction is still open;
        // the barrier in `advance` guarantees it, since every command that ends a
        // transaction waits for pending verdicts first.
        let keep = self.transaction.is_some();
        let mut index = 0;
        let mut addresses = self.pending.iter();
        for slot in &mut self.replies {
            match *slot {
                Slot::PendingPostmaster => {
                    if keep {
                        self.recipients.push(b"postmaster");
                    }
                    *slot = Slot::Line(RcptAnswer::Ok.line());
                    continue;
                }
                Slot::Pending => {}
                Slot::Ready(_) | Slot::Line(_) => continue,
            }
            let verdict = verdicts.ok().and_then(|v| v.get(index).copied());
            let answer = match verdict {
                None => RcptAnswer::TempFail,
                Some(verdict) => rcpt_answer(kind, verdict, harvest.is_some()),
            };
            // One address per pending slot, in order.
            let address = addresses.next();
            if answer == RcptAnswer::Ok
                && keep
                && let Some(address) = address
            {
                self.recipients.push(address);
            }
            *slot = Slot::Line(answer.line());
            index += 1;
        }
        drop(addresses);
        self.pending.clear();
    }

    /// The message that just ended, with its envelope. Meaningful after [`Event::Message`].
    pub fn message(&self) -> Message<'_> {
        Message {
            kind: self
                .transaction
                .as_ref()
                .map_or(TransactionKind::Mail, |t| t.kind),
            sender: &self.sender,
            recipients: &self.recipients,
            body: &self.body,
            size: self.data.size(),
        }
    }

    /// Hands the content held of the message in progress to the caller without a copy:
    /// swaps it with `buffer`, which is cleared first, so its capacity is reused for what
    /// follows. At [`Event::Content`] this is a chunk of the message; at [`Event::Message`]
    /// its last part ([`Message::body`]).
    pub fn swap_content(&mut self, buffer: &mut Vec<u8>) {
        buffer.clear();
        std::mem::swap(&mut self.body, buffer);
    }

    /// Tells the session what became of the message of [`Event::Message`]: queued under an
    /// id (`250 2.0.0`), or not stored (`451 4.3.0`: a message that got no 250 is the
    /// client's to retry). Either way the transaction ends.
    pub fn delivered(&mut self, result: Result<QueueId, ()>) {
        self.reset_transaction();
        self.reply(match result {
            Ok(id) => Reply::Queued(id),
            Err(()) => replies::SPOOL_FAILED,
        });
    }

    /// Whether any reply is queued.
    pub fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Appends every queued reply up to the first pending RCPT to `out`, in order, and
    /// forgets them. Call after resolving, so everything goes out in one write.
    pub fn flush(&mut self, identity: &ServerIdentity, out: &mut Vec<u8>) {
        let mut ready = 0;
        for slot in &self.replies {
            match *slot {
                Slot::Line(line) => line.write(out),
                Slot::Ready(reply) => reply.encode(identity, out),
                Slot::Pending | Slot::PendingPostmaster => break,
            }
            ready += 1;
        }
        self.replies.drain(..ready);
    }
}

/// Commands that must not run before pending RCPTs are answered: DATA needs to know
/// whether any recipient was accepted, and the others end the transaction the pending
/// recipients belong to.
fn depends_on_verdicts(command: &Command<'_>) -> bool {
    matches!(
        command,
        Command::Data
            | Command::Rset
            | Command::Mail { .. }
            | Command::Ehlo { .. }
            | Command::Helo { .. }
    )
}

/// The answer to a RCPT, by transaction kind and verdict. In a MAIL transaction preferences
/// are not consulted: an opted-out mailbox still receives ordinary mail.
fn rcpt_answer(kind: TransactionKind, verdict: Verdict, harvest_resistant: bool) -> RcptAnswer {
    match (kind, verdict) {
        (_, Verdict::Accept) | (TransactionKind::Mail, Verdict::OptedOut) => RcptAnswer::Ok,
        (TransactionKind::Bulk, Verdict::OptedOut) if harvest_resistant => RcptAnswer::Refused,
        (TransactionKind::Bulk, Verdict::OptedOut) => RcptAnswer::OptedOut,
        (_, Verdict::UnknownMailbox) if harvest_resistant => RcptAnswer::Refused,
        (_, Verdict::UnknownMailbox) => RcptAnswer::Unknown,
        (_, Verdict::NotLocal) => RcptAnswer::NotLocal,
    }
}

/// What a resolved RCPT is answered: one of the `replies::RCPT_*` constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RcptAnswer {
    /// [`replies::RCPT_OK`]: the address joins the envelope.
    Ok,
    /// [`replies::RCPT_OPTED_OUT`].
    OptedOut,
    /// [`replies::RCPT_UNKNOWN`].
    Unknown,
    /// [`replies::RCPT_REFUSED`] (harvest-resistant mode).
    Refused,
    /// [`replies::RCPT_NOT_LOCAL`].
    NotLocal,
    /// [`replies::RCPT_TEMPFAIL`]: no verdict.
    TempFail,
}

/// The text of a [`Reply::Fixed`], at compile time.
const fn fixed_text(reply: Reply) -> &'static str {
    match reply {
        Reply::Fixed(text) => text,
        _ => panic!("not a fixed reply"),
    }
}

/// Octets a [`PaddedLine`] holds: at least the longest RCPT reply line (the 69 of
/// `451 4.3.0 ...`, CRLF included), a multiple of a vector.
const PADDED: usize = 80;

/// A reply line (CRLF included) in a fixed-size array, zeros after it: written out as one
/// copy of [`PADDED`] octets, then cut to its length. A copy of the line's own length is a
/// `memcpy` call that branches on that length, and replies of different lengths follow
/// each other as unpredictably as the verdicts they carry.
#[derive(Debug, PartialEq, Eq)]
struct PaddedLine {
    octets: [u8; PADDED],
    len: usize,
}

impl PaddedLine {
    /// The line, CRLF included.
    #[cfg(test)]
    fn line(&self) -> &[u8] {
        &self.octets[..self.len]
    }

    /// Appends the line to `out`.
    #[inline(always)]
    fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.octets);
        out.truncate(start + self.len);
    }
}

/// `text` and CRLF, padded, at compile time.
const fn with_crlf(text: &str) -> PaddedLine {
    let text = text.as_bytes();
    assert!(text.len() + 2 <= PADDED, "a reply line longer than PADDED");
    let mut octets = [0u8; PADDED];
    let mut i = 0;
    while i < text.len() {
        octets[i] = text[i];
        i += 1;
    }
    octets[text.len()] = b'\r';
    octets[text.len() + 1] = b'\n';
    PaddedLine {
        octets,
        len: text.len() + 2,
    }
}

/// The wire line of a fixed reply, CRLF included, built at compile time from the reply
/// itself: one text per reply, so the line is byte-identical to what
/// [`Reply::encode`] writes.
macro_rules! wire_line {
    ($reply:expr) => {{
        const LINE: PaddedLine = with_crlf(fixed_text($reply));
        &LINE
    }};
}

impl RcptAnswer {
    /// The reply as it goes on the wire, CRLF included.
    fn line(self) -> &'static PaddedLine {
        match self {
            RcptAnswer::Ok => wire_line!(replies::RCPT_OK),
            RcptAnswer::OptedOut => wire_line!(replies::RCPT_OPTED_OUT),
            RcptAnswer::Unknown => wire_line!(replies::RCPT_UNKNOWN),
            RcptAnswer::Refused => wire_line!(replies::RCPT_REFUSED),
            RcptAnswer::NotLocal => wire_line!(replies::RCPT_NOT_LOCAL),
            RcptAnswer::TempFail => wire_line!(replies::RCPT_TEMPFAIL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verdicts by the address's local part, standing in for a backend so these tests
    /// exercise only the state machine (the real backends have their own suite).
    fn verdict(address: &[u8]) -> Verdict {
        let text = String::from_utf8_lossy(address);
        if text.ends_with("@elsewhere.example") {
            Verdict::NotLocal
        } else if text.starts_with("in") {
            Verdict::Accept
        } else if text.starts_with("out") {
            Verdict::OptedOut
        } else {
            Verdict::UnknownMailbox
        }
    }

    fn resolve_all(session: &mut Session, fail: bool) {
        let verdicts: Vec<Verdict> = session.pending().iter().map(verdict).collect();
        session.resolve(if fail { Err(()) } else { Ok(&verdicts) });
    }

    /// Drives a session over `input` delivered in pieces of `chunk` bytes, as a server
    /// would; returns everything the session answered.
    fn converse_with(config: SessionConfig, input: &[u8], chunk: usize, fail: bool) -> String {
        converse_reads(config, input.chunks(chunk.max(1)), fail)
    }

    /// [`converse_with`], one read per line.
    fn converse_by_line(config: SessionConfig, input: &[u8]) -> String {
        converse_reads(config, input.split_inclusive(|&b| b == b'\n'), false)
    }

    /// Drives a session over the reads `pieces`, as a server would.
    fn converse_reads<'a>(
        config: SessionConfig,
        pieces: impl Iterator<Item = &'a [u8]>,
        fail: bool,
    ) -> String {
        let mut session = Session::new(config);
        session.greet();
        let identity = ServerIdentity::default();
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        'read: for piece in pieces {
            buffer.extend_from_slice(piece);
            loop {
                let (consumed, event) = session.advance(&buffer);
                buffer.drain(..consumed);
                match event {
                    Event::NeedInput => break,
                    Event::NeedVerdicts => {
                        resolve_all(&mut session, fail);
                    }
                    Event::Message => {
                        let size = session.message().size;
                        session.delivered(Ok(QueueId(size)));
                    }
                    Event::Close => {
                        resolve_all(&mut session, fail);
                        session.flush(&identity, &mut out);
                        break 'read;
                    }
                    // As the server does: the rest of this read is plaintext pipelined
                    // after STARTTLS, dropped; the handshake succeeds, and the next read
                    // is what came under TLS.
                    Event::StartTls => {
                        buffer.clear();
                        resolve_all(&mut session, fail);
                        session.flush(&identity, &mut out);
                        session.tls_started();
                        continue 'read;
                    }

                    Event::MessageRefused => {}
                    Event::Content => {
                        unreachable!("a session that keeps no messages hands no content over")
                    }
                }
            }
            resolve_all(&mut session, fail);
            session.flush(&identity, &mut out);
        }
        String::from_utf8(out).expect("replies are ASCII")
    }

    fn converse(input: &[u8]) -> String {
        converse_with(SessionConfig::default(), input, input.len(), false)
    }

    /// Feeds `input` to a new session until it needs more; returns the session.
    fn session_after(input: &[u8]) -> Session {
        let mut session = Session::new(SessionConfig::default());
        session.greet();
        let mut rest = input;
        loop {
            let (consumed, event) = session.advance(rest);
            rest = &rest[consumed..];
            match event {
                Event::NeedVerdicts => {
                    resolve_all(&mut session, false);
                }
                Event::NeedInput | Event::Close | Event::StartTls => return session,
                Event::Message => session.delivered(Ok(QueueId(0))),

                Event::MessageRefused => {}
                Event::Content => {
                    unreachable!("a session that keeps no messages hands no content over")
                }
            }
        }
    }

    #[test]
    fn rcpt_answers_are_their_replies_on_the_wire() {
        let identity = ServerIdentity::default();
        let answers = [
            (RcptAnswer::Ok, replies::RCPT_OK),
            (RcptAnswer::OptedOut, replies::RCPT_OPTED_OUT),
            (RcptAnswer::Unknown, replies::RCPT_UNKNOWN),
            (RcptAnswer::Refused, replies::RCPT_REFUSED),
            (RcptAnswer::NotLocal, replies::RCPT_NOT_LOCAL),
            (RcptAnswer::TempFail, replies::RCPT_TEMPFAIL),
        ];
        for (answer, reply) in answers {
            assert_eq!(answer.line().line(), reply.render(&identity).as_bytes());
        }
    }

    #[test]
    fn only_quit_counts_as_ended_by_quit() {
        let quit = session_after(b"EHLO c.example\r\nQUIT\r\n");
        assert!(quit.is_closed() && quit.ended_by_quit());
        let flood = session_after("BOGUS\r\n".repeat(20).as_bytes());
        assert!(flood.is_closed() && !flood.ended_by_quit());
        let mut idle = session_after(b"EHLO c.example\r\n");
        assert!(!idle.is_closed() && !idle.ended_by_quit());
        idle.close(Closing::IdleTimeout);
        assert!(idle.is_closed() && !idle.ended_by_quit());
    }

    /// The reply codes with enhanced codes, one per reply line, greeting and EHLO dropped.
    fn codes(replies: &str) -> Vec<String> {
        replies
            .lines()
            .filter(|line| !line.starts_with("220 localhost") && !line.starts_with("250-"))
            .filter(|line| *line != "250 BULK")
            .map(|line| line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn bulk_transaction_answers_every_verdict() {
        let out = converse(
            b"EHLO c.example\r\nBULK FROM:<news@shop.example>\r\n\
              RCPT TO:<in1@example.org>\r\nRCPT TO:<out1@example.org>\r\n\
              RCPT TO:<nobody@example.org>\r\nRCPT TO:<in2@elsewhere.example>\r\n\
              RCPT TO:<Postmaster>\r\nDATA\r\nHello\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(
            codes(&out),
            [
                "250 2.1.0",
                "250 2.1.5",
                "550 5.7.1",
                "550 5.1.1",
                "554 5.7.1",
                "550 5.7.1",
                "354 End",
                "250 2.0.0",
                "221 2.0.0"
            ]
        );
        assert!(out.contains("Recipient does not accept bulk mail"));
    }

    #[test]
    fn mail_transaction_ignores_preferences() {
        let out = converse(
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<out1@example.org>\r\n\
              RCPT TO:<nobody@example.org>\r\nRCPT TO:<postmaster>\r\nQUIT\r\n",
        );
        assert_eq!(
            codes(&out),
            [
                "250 2.1.0",
                "250 2.1.5",
                "550 5.1.1",
                "250 2.1.5",
                "221 2.0.0"
            ]
        );
    }

    #[test]
    fn sequence_errors() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"MAIL FROM:<a@b.c>\r\n", &["503 5.5.1"]),
            (b"BULK FROM:<a@b.c>\r\n", &["503 5.5.1"]),
            (b"RCPT TO:<a@b.c>\r\n", &["503 5.5.1"]),
            (b"DATA\r\n", &["503 5.5.1"]),
            (
                b"HELO c\r\nBULK FROM:<a@b.c>\r\n",
                &["250 localhost", "503 5.5.1"],
            ),
            (
                b"HELO c\r\nMAIL FROM:<a@b.c>\r\n",
                &["250 localhost", "250 2.1.0"],
            ),
            (b"EHLO c\r\nRCPT TO:<in@b.c>\r\n", &["503 5.5.1"]),
            (b"EHLO c\r\nDATA\r\n", &["503 5.5.1"]),
            (
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nBULK FROM:<a@b.c>\r\n",
                &["250 2.1.0", "503 5.5.1"],
            ),
            (
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n",
                &["250 2.1.0", "554 5.5.1"],
            ),
            (
                b"EHLO c\r\nBULK FROM:<a@b.c>\r\nRCPT TO:<out@b.c>\r\nDATA\r\n",
                &["250 2.1.0", "550 5.7.1", "554 5.5.1"],
            ),
            (
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRSET\r\nRCPT TO:<in@b.c>\r\n",
                &["250 2.1.0", "250 2.0.0", "503 5.5.1"],
            ),
            (
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nEHLO c\r\nRCPT TO:<in@b.c>\r\n",
                &["250 2.1.0", "503 5.5.1"],
            ),
            (
                b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=99999999999\r\n",
                &["552 5.3.4"],
            ),
            (
                b"VRFY ann@b.c\r\nHELP\r\nNOOP\r\n",
                &["252 2.5.0", "214 2.0.0", "250 2.0.0"],
            ),
            (
                b"FOO\r\nNOOP\nNOOP\r\n",
                &["500 5.5.2", "500 5.5.2", "250 2.0.0"],
            ),
        ];
        for (input, expected) in cases {
            let out = converse(input);
            assert_eq!(
                codes(&out),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn tls(policy: TlsPolicy) -> SessionConfig {
        SessionConfig {
            tls: policy,
            ..SessionConfig::default()
        }
    }

    #[test]
    fn starttls_is_offered_answered_and_starts_the_session_over() {
        // Each command in a read of its own: what follows STARTTLS comes under TLS.
        let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.c>\r\nEHLO c\r\n\
                      STARTTLS\r\nBULK FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nQUIT\r\n";
        let out = converse_by_line(tls(TlsPolicy::Offered), input);
        // Only the EHLO before TLS offers STARTTLS; after it the client must EHLO again.
        assert_eq!(out.matches("250-STARTTLS\r\n").count(), 1, "{out}");
        assert_eq!(out.matches("250 BULK\r\n").count(), 2, "{out}");
        assert_eq!(
            codes(&out),
            [
                "220 2.0.0",
                "503 5.5.1",
                "503 5.5.1",
                "250 2.1.0",
                "250 2.1.5",
                "221 2.0.0"
            ]
        );
        assert!(out.contains("503 5.5.1 TLS already active\r\n"), "{out}");
    }

    /// A padded line appends exactly its line, after what the buffer held.
    #[test]
    fn padded_lines_append_their_line_only() {
        let mut out = b"250 OK\r\n".to_vec();
        RcptAnswer::OptedOut.line().write(&mut out);
        RcptAnswer::Ok.line().write(&mut out);
        assert_eq!(
            out,
            b"250 OK\r\n550 5.7.1 Recipient does not accept bulk mail\r\n\
              250 2.1.5 Recipient ok\r\n"
        );
    }

    /// HELP names STARTTLS exactly when EHLO would advertise it.
    #[test]
    fn help_lists_starttls_while_it_is_offered() {
        let input = b"HELP\r\nSTARTTLS\r\nHELP\r\nQUIT\r\n";
        let offered = converse_by_line(tls(TlsPolicy::Offered), input);
        let helps: Vec<&str> = offered.lines().filter(|l| l.starts_with("214")).collect();
        assert_eq!(
            helps,
            [
                replies::HELP_STARTTLS
                    .render(&ServerIdentity::default())
                    .trim_end(),
                replies::HELP.render(&ServerIdentity::default()).trim_end(),
            ],
            "{offered}"
        );
        assert!(helps[0].ends_with(" HELP STARTTLS"), "{offered}");
        let off = converse_by_line(SessionConfig::default(), b"HELP\r\nQUIT\r\n");
        assert!(
            off.contains("VRFY HELP\r\n") && !off.contains("STARTTLS"),
            "{off}"
        );
    }

    #[test]
    fn plaintext_pipelined_after_starttls_is_never_executed() {
        // One read: MAIL, NOOP and QUIT ride in the same packet as STARTTLS.
        let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.c>\r\nNOOP\r\nQUIT\r\n";
        let mut session = Session::new(tls(TlsPolicy::Offered));
        let (consumed, event) = session.advance(input);
        assert_eq!(event, Event::StartTls);
        assert_eq!(&input[consumed..], b"MAIL FROM:<a@b.c>\r\nNOOP\r\nQUIT\r\n");
        // A host that hands them over again anyway: consumed, not executed.
        let rest = &input[consumed..];
        assert_eq!(session.advance(rest), (rest.len(), Event::StartTls));
        let mut out = Vec::new();
        session.flush(&ServerIdentity::default(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.ends_with("250 BULK\r\n220 2.0.0 Ready to start TLS\r\n"),
            "{out}"
        );
        session.tls_started();
        assert!(!session.in_transaction() && !session.is_closed());
        // The smuggled MAIL is not in effect: RCPT is out of sequence, even after EHLO.
        let after = converse_with(
            tls(TlsPolicy::Offered),
            b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.c>\r\n",
            usize::MAX,
            false,
        );
        assert_eq!(codes(&after), ["220 2.0.0"]);
        let input = b"EHLO c\r\nRCPT TO:<in@x.org>\r\n";
        assert_eq!(session.advance(input), (input.len(), Event::NeedInput));
        let mut out = Vec::new();
        session.flush(&ServerIdentity::default(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(codes(&out), ["503 5.5.1"], "{out}");
    }

    #[test]
    fn starttls_replies_by_policy_and_syntax() {
        let cases: &[(TlsPolicy, &[u8], &[&str])] = &[
            (
                TlsPolicy::Off,
                b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n",
                &["502 5.5.1", "250 2.0.0"],
            ),
            (
                TlsPolicy::Offered,
                b"STARTTLS now\r\nNOOP\r\n",
                &["501 5.5.4", "250 2.0.0"],
            ),
            (
                TlsPolicy::Offered,
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n",
                &["250 2.1.0"],
            ),
            (
                TlsPolicy::Required,
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n",
                &["530 5.7.0"],
            ),
            (
                TlsPolicy::Required,
                b"EHLO c\r\nBULK FROM:<a@b.c>\r\n",
                &["530 5.7.0"],
            ),
            (
                TlsPolicy::Required,
                b"EHLO c\r\nBULK FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\n",
                &["530 5.7.0", "503 5.5.1"],
            ),
        ];
        for (policy, input, expected) in cases {
            let out = converse_with(tls(*policy), input, input.len(), false);
            assert_eq!(
                codes(&out),
                *expected,
                "{policy:?} {:?}",
                String::from_utf8_lossy(input)
            );
            let offered = out.contains("250-STARTTLS\r\n");
            assert_eq!(
                offered,
                *policy != TlsPolicy::Off && out.contains("250 BULK")
            );
        }
        // Required: after the handshake a transaction goes through, in a separate read.
        let input = b"EHLO c\r\nSTARTTLS\r\nEHLO c\r\nBULK FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\n";
        let out = converse_by_line(tls(TlsPolicy::Required), input);
        assert_eq!(
            codes(&out),
            ["220 2.0.0", "250 2.1.0", "250 2.1.5"],
            "{out}"
        );
    }

    #[test]
    fn starttls_in_a_transaction_answers_pending_rcpts_first_and_ends_it() {
        let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nSTARTTLS\r\n";
        let mut session = Session::new(tls(TlsPolicy::Offered));
        let (consumed, event) = session.advance(input);
        assert_eq!((consumed, event), (input.len(), Event::StartTls));
        assert_eq!(session.pending().len(), 1);
        resolve_all(&mut session, false);
        let mut out = Vec::new();
        session.flush(&ServerIdentity::default(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(codes(&out), ["250 2.1.0", "250 2.1.5", "220 2.0.0"]);
        assert!(session.in_transaction());
        session.tls_started();
        assert!(!session.in_transaction());
    }

    #[test]
    fn replies_do_not_depend_on_how_input_is_split() {
        let input = b"EHLO c\r\nBULK FROM:<a@b.c> SIZE=100\r\nRCPT TO:<in1@x.org>\r\n\
                      RCPT TO:<out@x.org>\r\nDATA\r\nline one\r\n..dot\r\n.\r\n\
                      MAIL FROM:<a@b.c>\r\nRCPT TO:<in2@x.org>\r\nRSET\r\nQUIT\r\n";
        let whole = converse(input);
        for chunk in 1..40 {
            assert_eq!(
                converse_with(SessionConfig::default(), input, chunk, false),
                whole,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn error_limit_closes_with_421() {
        let input = "XYZZY\r\n".repeat(12);
        let out = converse(input.as_bytes());
        let codes = codes(&out);
        assert_eq!(codes.len(), 11, "{out}");
        assert!(codes[..10].iter().all(|c| c == "500 5.5.2"));
        assert_eq!(codes[10], "421 4.7.0");
    }

    #[test]
    fn refusals_never_count_as_errors_and_the_limit_is_452() {
        let mut input = String::from("EHLO c\r\nBULK FROM:<a@b.c>\r\n");
        for i in 0..1001 {
            let local = if i % 10 == 0 {
                "in"
            } else if i % 2 == 0 {
                "out"
            } else {
                "nobody"
            };
            input.push_str(&format!("RCPT TO:<{local}{i}@x.org>\r\n"));
        }
        input.push_str("DATA\r\n.\r\nQUIT\r\n");
        let out = converse(input.as_bytes());
        let codes = codes(&out);
        assert_eq!(codes.len(), 1 + 1001 + 3, "{}", &out[out.len() - 300..]);
        // RCPT 1,000 (index 999, an unknown mailbox) is still answered; 1,001 is over.
        assert_eq!(codes[1000], "550 5.1.1");
        assert_eq!(codes[1001], "452 4.5.3");
        assert_eq!(&codes[1002..], ["354 End", "250 2.0.0", "221 2.0.0"]);
    }

    #[test]
    fn over_long_lines_are_answered_once_and_the_session_goes_on() {
        let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(600));
        for chunk in [1, 7, 100, long.len()] {
            let out = converse_with(SessionConfig::default(), long.as_bytes(), chunk, false);
            assert_eq!(codes(&out), ["500 5.5.2", "250 2.0.0"], "chunk {chunk}");
        }
        // 512 octets with CRLF is the limit itself, and fits.
        let exact = format!("NOOP {}\r\n", "x".repeat(512 - 7));
        assert_eq!(exact.len(), 512);
        assert_eq!(codes(&converse(exact.as_bytes())), ["250 2.0.0"]);
        let over = format!("NOOP {}\r\n", "x".repeat(512 - 6));
        assert_eq!(codes(&converse(over.as_bytes())), ["500 5.5.2"]);
    }

    #[test]
    fn backend_failure_is_a_temporary_failure() {
        let input = b"EHLO c\r\nBULK FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nDATA\r\n";
        let out = converse_with(SessionConfig::default(), input, input.len(), true);
        assert_eq!(codes(&out), ["250 2.1.0", "451 4.3.0", "554 5.5.1"]);
    }

    #[test]
    fn harvest_resistant_mode_hides_unknowns() {
        let config = SessionConfig {
            harvest: Some(HarvestConfig {}),
            ..SessionConfig::default()
        };
        let mut session = Session::new(config);
        let input = b"EHLO c\r\nBULK FROM:<a@b.c>\r\nRCPT TO:<out@x.org>\r\n\
                      RCPT TO:<n1@x.org>\r\nRCPT TO:<n2@x.org>\r\nRCPT TO:<in@x.org>\r\n\
                      RCPT TO:<out@x.org>\r\n";
        let (consumed, event) = session.advance(input);
        assert_eq!((consumed, event), (input.len(), Event::NeedInput));
        resolve_all(&mut session, false);
        let mut out = Vec::new();
        session.flush(&ServerIdentity::default(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            codes(&out),
            [
                "250 2.1.0",
                "550 5.7.1",
                "550 5.7.1",
                "550 5.7.1",
                "250 2.1.5",
                "550 5.7.1"
            ]
        );
        assert!(!out.contains("5.1.1"));
        assert_eq!(out.matches("550 5.7.1 Recipient refused").count(), 4);
    }

    #[test]
    fn preferences_for_mail_refuse_opted_out_recipients_under_mail() {
        let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<out@x.org>\r\n\
                      RCPT TO:<in@x.org>\r\nRCPT TO:<n1@x.org>\r\n";
        let mail_codes = |preferences_for_mail| {
            let config = SessionConfig {
                preferences_for_mail,
                ..SessionConfig::default()
            };
            codes(&converse_with(config, input, input.len(), false))
        };
        // By default an opted-out mailbox still receives ordinary mail.
        assert_eq!(
            mail_codes(false),
            ["250 2.1.0", "250 2.1.5", "250 2.1.5", "550 5.1.1"]
        );
        assert_eq!(
            mail_codes(true),
            ["250 2.1.0", "550 5.7.1", "250 2.1.5", "550 5.1.1"]
        );
    }

    #[test]
    fn message_carries_envelope_and_unstuffed_body() {
        let config = SessionConfig {
            keep_message: true,
            ..SessionConfig::default()
        };
        let mut session = Session::new(config);
        let input = b"EHLO c\r\nBULK FROM:<news@shop.example>\r\nRCPT TO:<in1@x.org>\r\n\
                      RCPT TO:<out@x.org>\r\nRCPT TO:<in2@x.org>\r\nDATA\r\n";
        let (n, event) = session.advance(input);
        assert_eq!(event, Event::NeedVerdicts);
        resolve_all(&mut session, false);
        let (m, event) = session.advance(&input[n..]);
        assert_eq!((n + m, event), (input.len(), Event::NeedInput));
        let (_, event) = session.advance(b"Subject: x\r\n\r\n..hi\r\n.\r\n");
        assert_eq!(event, Event::Message);
        let message = session.message();
        assert_eq!(message.kind, TransactionKind::Bulk);
        assert_eq!(message.sender, b"news@shop.example");
        let recipients: Vec<&[u8]> = message.recipients.iter().collect();
        assert_eq!(recipients, [&b"in1@x.org"[..], b"in2@x.org"]);
        assert_eq!(message.body, b"Subject: x\r\n\r\n.hi\r\n");
        session.delivered(Err(()));
        assert!(!session.in_transaction());
        let mut out = Vec::new();
        session.flush(&ServerIdentity::default(), &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("451 4.3.0 Local error in processing, message not accepted\r\n")
        );
    }

    #[test]
    fn postmaster_keeps_its_place_in_the_envelope_whatever_the_reads() {
        let input =
            b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<in1@x.org>\r\nRCPT TO:<postmaster>\r\n\
                      RCPT TO:<in2@x.org>\r\nDATA\r\nhi\r\n.\r\n";
        for chunk in [input.len(), 1, 7, 30] {
            let mut session = Session::new(SessionConfig::default());
            let mut buffer = Vec::new();
            let mut envelope = Vec::new();
            for piece in input.chunks(chunk) {
                buffer.extend_from_slice(piece);
                loop {
                    let (used, event) = session.advance(&buffer);
                    buffer.drain(..used);
                    match event {
                        Event::NeedVerdicts => {
                            resolve_all(&mut session, false);
                        }
                        Event::Message => {
                            envelope = session
                                .message()
                                .recipients
                                .iter()
                                .map(<[u8]>::to_vec)
                                .collect();
                            session.delivered(Ok(QueueId(1)));
                        }
                        Event::NeedInput | Event::Close | Event::StartTls => break,

                        Event::MessageRefused => {}
                        Event::Content => {
                            unreachable!("a session that keeps no messages hands no content over")
                        }
                    }
                }
                resolve_all(&mut session, false);
            }
            assert_eq!(
                envelope,
                [&b"in1@x.org"[..], b"postmaster", b"in2@x.org"],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn bad_messages_are_refused_at_their_end_and_smuggling_fails() {
        let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nDATA\r\n\
                      hi\n.\nRCPT TO:<in@evil.example>\r\n.\r\nQUIT\r\n";
        let out = converse(input);
        assert_eq!(
            codes(&out),
            [
                "250 2.1.0",
                "250 2.1.5",
                "354 End",
                "550 5.5.2",
                "221 2.0.0"
            ]
        );
    }

    /// Drives a keeping session over `input` in reads of `read` bytes with `chunk`-octet
    /// content chunks; returns each delivered message's whole content, the number of
    /// refused messages, and the most content the session ever held at once.
    fn chunked(input: &[u8], read: usize, chunk: usize) -> (Vec<Vec<u8>>, usize, usize) {
        let config = SessionConfig {
            keep_message: true,
            content_chunk: chunk,
            ..SessionConfig::default()
        };
        let mut session = Session::new(config);
        let (mut buffer, mut taken, mut spare) = (Vec::new(), Vec::new(), Vec::new());
        let (mut delivered, mut refused, mut most) = (Vec::new(), 0, 0);
        for piece in input.chunks(read) {
            buffer.extend_from_slice(piece);
            loop {
                let (used, event) = session.advance(&buffer);
                buffer.drain(..used);
                most = most.max(session.message().body.len());
                match event {
                    Event::NeedInput | Event::Close | Event::StartTls => break,
                    Event::NeedVerdicts => {
                        resolve_all(&mut session, false);
                    }
                    Event::Content => {
                        session.swap_content(&mut spare);
                        taken.extend_from_slice(&spare);
                    }
                    Event::MessageRefused => {
                        refused += 1;
                        taken.clear();
                    }
                    Event::Message => {
                        session.swap_content(&mut spare);
                        taken.extend_from_slice(&spare);
                        assert_eq!(taken.len() as u64, session.message().size);
                        delivered.push(std::mem::take(&mut taken));
                        session.delivered(Ok(QueueId(1)));
                    }
                }
            }
            resolve_all(&mut session, false);
        }
        (delivered, refused, most)
    }

    #[test]
    fn content_is_handed_over_in_chunks_whatever_the_reads() {
        let mut body = Vec::new();
        for i in 0..300 {
            body.extend_from_slice(format!("..line {i} of a long message\r\n").as_bytes());
        }
        let mut input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nDATA\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b".\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nDATA\r\n");
        input.extend_from_slice(&body);
        input.extend_from_slice(b"bare\nLF\r\n.\r\nQUIT\r\n");
        let unstuffed: Vec<u8> = body
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|line| line[1..].to_vec())
            .collect();
        let (whole, refused, _) = chunked(&input, input.len(), usize::MAX);
        assert_eq!((whole, refused), (vec![unstuffed.clone()], 1));
        for chunk in [1, 2, 7, 100, 4096] {
            for read in [1, 3, 50, 4096] {
                let (delivered, refused, most) = chunked(&input, read, chunk);
                assert_eq!(
                    delivered,
                    std::slice::from_ref(&unstuffed),
                    "chunk {chunk}, reads of {read}"
                );
                assert_eq!(refused, 1, "chunk {chunk}, reads of {read}");
                // One octet over at most: a CR held back comes out with its LF.
                assert!(
                    most <= chunk + 1,
                    "held {most}, chunk {chunk}, reads of {read}"
                );
            }
        }
    }

    #[test]
    fn a_session_between_messages_holds_no_content_buffer() {
        let config = SessionConfig {
            keep_message: true,
            ..SessionConfig::default()
        };
        let mut session = Session::new(config);
        let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<in@x.org>\r\nDATA\r\n";
        let (n, _) = session.advance(input);
        resolve_all(&mut session, false);
        session.advance(&input[n..]);
        let lines = format!("{}\r\n", "x".repeat(98)).repeat(50);
        let (_, event) = session.advance(lines.as_bytes());
        assert_eq!(event, Event::NeedInput);
        assert!(session.body.capacity() >= 5000);
        let (_, event) = session.advance(b".\r\n");
        assert_eq!(event, Event::Message);
        session.delivered(Ok(QueueId(1)));
        assert_eq!(session.body.capacity(), 0);
    }
}
