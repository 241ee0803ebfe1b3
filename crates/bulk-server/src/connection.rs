//! One connection: a socket driving a [`bulk_proto::Session`].
//!
//! Per read: parse every complete command in the buffer, resolve that read's RCPTs in one
//! backend call (more than one only when a command in the read depends on earlier verdicts,
//! like DATA), and send every reply of the read in one write.
//!
//! Three clocks bound how long a client can hold the connection: the idle timeout (no
//! byte at all), the line deadline (a command line started and not finished) and the DATA
//! deadline (message content slower than the minimum rate). With a spool, message content
//! goes to the message's spool file in chunks as it arrives.
//!
//! After STARTTLS the same loop runs over TLS ([`Stream::Tls`]): only how a read waits
//! differs (rustls may hold decrypted bytes the socket no longer shows). A plaintext
//! connection reads exactly as before: readiness, then one `recv` into its worker thread's
//! chunk.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bulk_policy::{PolicyBackend, Verdict};
use bulk_proto::{Closing, QueueId, Session, SessionHost};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::spool::{Draft, Spool};
use crate::{MemoryGrant, MessageMemory, Shared, Stats};

/// Bytes read at most per read call on a plaintext connection. The input buffer holds only
/// what the session has not consumed yet (a partial command line); it is empty, and
/// released, between reads of a client that sent whole commands, so idle connections cost
/// little memory. 16 KiB takes a pipelined transaction of a few hundred RCPTs in one read:
/// at 4 KiB, a hundred of them took two reads, two lookups and two replies' sends.
const READ_CHUNK: usize = 16 * 1024;
/// The same under TLS, where each connection keeps its own chunk (see [`TlsSide`]).
const TLS_READ_CHUNK: usize = 4096;

thread_local! {
    /// The chunk a plaintext read lands in before its bytes join the connection's input:
    /// one per worker thread, so no connection keeps one and no read zeroes one.
    static CHUNK: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// How long a closing connection keeps reading (and discarding) what the client still sends
/// after our last reply, so that closing with unread input (which makes the kernel send RST)
/// does not destroy the reply before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// The linger while the server shuts down: long enough for input already in flight to be
/// read (so the close does not reset the connection and destroy the 421), short enough
/// that a client keeping its side open does not hold the exit.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(100);
/// Bytes a lingering connection discards at most before it closes anyway.
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// One `recv(2)` on `stream`'s socket with `flags`, past tokio's cached readiness.
fn recv(stream: &TcpStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: recv writes at most buf.len() bytes into `buf`, which outlives the call, on a
    // descriptor `stream` keeps open.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Whether the kernel holds received bytes not read yet: a non-blocking peek, a system
/// call every time (tokio's `try_read` answers from its cached readiness without asking
/// the kernel, which could miss bytes that came after the last read). End of input, no
/// input and errors all say no: there is nothing a close could reset.
fn input_waiting(stream: &TcpStream) -> bool {
    recv(stream, &mut [0u8], libc::MSG_PEEK | libc::MSG_DONTWAIT).is_ok_and(|n| n > 0)
}

/// Reads what the kernel holds for `stream`, up to `chunk`'s length; `Ok(0)` is end of
/// input, and `WouldBlock` means nothing was there.
///
/// Unlike `TcpStream::try_read`, a short read also clears tokio's cached read readiness,
/// as tokio's own `poll_read` does: a TCP socket answers a read with less than was asked
/// when its receive queue is empty, so the next wait sleeps until more arrives instead of
/// waking at once for a read that must fail with EAGAIN (one wasted wake-up and system
/// call per command group otherwise). Bytes that arrive after the read raise a new
/// readiness event, which tokio keeps (it clears only the readiness it saw before the
/// read). The one other short read, at an urgent-data mark (MSG_OOB, which SMTP does not
/// use), leaves that client waiting for its next bytes or the idle timeout, as with
/// tokio's `poll_read`.
fn read_chunk(stream: &TcpStream, chunk: &mut [u8]) -> io::Result<usize> {
    let mut short = 0;
    let read = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = recv(stream, chunk, 0)?;
        if n > 0 && n < chunk.len() {
            // Tell tokio the queue is empty: it clears readiness on WouldBlock only.
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match read {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
        other => other,
    }
}

/// One read of a plaintext connection ([`read_chunk`]), through the worker thread's chunk,
/// appended to `input`.
fn read_into(stream: &TcpStream, input: &mut BytesMut) -> io::Result<usize> {
    CHUNK.with_borrow_mut(|chunk| {
        let n = read_chunk(stream, chunk)?;
        input.extend_from_slice(&chunk[..n]);
        Ok(n)
    })
}

/// The longest rest of a read that [`release_input`] moves to a buffer of its own: more
/// than a command line (512 octets).
const SHORT_REST: usize = 1024;

/// What the input buffer keeps between reads: nothing when the session took every byte
/// (the client thinks; an idle connection holds no buffer), and a short rest (a partial
/// line) in a buffer of its own size rather than in the one a read of up to 16 KiB grew
/// (`BytesMut` keeps its whole allocation behind what it has consumed), so that a client
/// that stops mid-line holds its line, not the read's buffer. One small copy for a read
/// that ends mid-line.
fn release_input(input: &mut BytesMut) {
    if input.is_empty() {
        *input = BytesMut::new();
    } else if input.len() <= SHORT_REST {
        *input = BytesMut::from(&input[..]);
    }
}

/// `by` after `at`, or a time that never comes if that is past what an `Instant` holds
/// (a timeout given as "forever").
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

/// What woke a connection waiting for input.
enum Wake {
    Readable,
    /// A deadline passed: the idle timeout, the line or the DATA deadline.
    Expired(Closing),
    Shutdown,
    Failed(io::Error),
}

/// What one wait for input brought.
enum Input {
    /// This many bytes were appended to the input buffer.
    Read(usize),
    /// Nothing after all (a spurious wake-up): wait again.
    Nothing,
    /// The client closed its side.
    End,
    /// No input: a deadline, shutdown or an error.
    Woke(Wake),
}

/// A connection's byte stream: the socket, or TLS over it once STARTTLS succeeded.
enum Stream {
    Plain(TcpStream),
    /// Boxed, so a plaintext connection does not carry a rustls session's size.
    Tls(Box<TlsSide>),
    /// The socket is in the TLS handshake (which owns it), or was closed by its failure.
    Handshaking,
}

/// The TLS side of a connection.
struct TlsSide {
    stream: TlsStream<TcpStream>,
    /// What a read decrypts into: a TLS read waits inside the read (see
    /// `Connection::read_tls`), so its buffer must outlive the wait, and on the heap it does
    /// not grow every connection's future.
    chunk: [u8; TLS_READ_CHUNK],
}

/// The socket is gone (a failed TLS handshake closed it).
fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed by the TLS handshake",
    )
}

impl Stream {
    /// The TCP socket under the stream.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(stream) => Some(stream),
            Stream::Tls(tls) => Some(tls.stream.get_ref().0),
            Stream::Handshaking => None,
        }
    }

    /// Writes all of `bytes` and, under TLS, flushes the records rustls holds to the socket.
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.write_all(bytes).await,
            Stream::Tls(tls) => {
                tls.stream.write_all(bytes).await?;
                tls.stream.flush().await
            }
            Stream::Handshaking => Err(not_connected()),
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf).await,
            Stream::Tls(tls) => tls.stream.read(buf).await,
            Stream::Handshaking => Ok(0),
        }
    }

    /// Closes our sending side: a FIN, after TLS's close_notify under TLS.
    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.shutdown().await,
            Stream::Tls(tls) => tls.stream.shutdown().await,
            Stream::Handshaking => Ok(()),
        }
    }
}

/// Counters of one connection, added to the server's totals when it ends (one atomic add
/// per counter per connection instead of one per RCPT).
#[derive(Default)]
struct Counts {
    rcpts: u64,
    accepted: u64,
    opted_out: u64,
    unknown: u64,
    not_local: u64,
    tempfail: u64,
    messages: u64,
    /// STARTTLS happens at most once per connection: a state, not counters (two bytes
    /// where three counters would add 24 to every connection).
    tls: TlsOutcome,
    /// Plaintext followed STARTTLS in its read and was discarded.
    starttls_discarded: bool,
}

/// What became of STARTTLS on a connection.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum TlsOutcome {
    #[default]
    None,
    Started,
    Failed,
}

impl Counts {
    fn add_to(&self, stats: &Stats) {
        stats.rcpts.fetch_add(self.rcpts, Ordering::Relaxed);
        stats.accepted.fetch_add(self.accepted, Ordering::Relaxed);
        stats.opted_out.fetch_add(self.opted_out, Ordering::Relaxed);
        stats.unknown.fetch_add(self.unknown, Ordering::Relaxed);
        stats.not_local.fetch_add(self.not_local, Ordering::Relaxed);
        stats.tempfail.fetch_add(self.tempfail, Ordering::Relaxed);
        stats.messages.fetch_add(self.messages, Ordering::Relaxed);
        // Most connections have nothing to add here: no shared cache line touched then.
        match self.tls {
            TlsOutcome::None => {}
            TlsOutcome::Started => _ = stats.tls_sessions.fetch_add(1, Ordering::Relaxed),
            TlsOutcome::Failed => _ = stats.tls_failed.fetch_add(1, Ordering::Relaxed),
        }
        if self.starttls_discarded {
            stats.starttls_discards.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Connection<P> {
    stream: Stream,
    session: Session,
    input: BytesMut,
    output: Vec<u8>,
    host: Host<P>,
    /// When the server began waiting for the rest of the command line in progress; `None`
    /// between lines.
    line_since: Option<Instant>,
    /// While the session reads message content: when the DATA phase runs out.
    data_deadline: Option<Instant>,
}

/// What the session asks of the server (`bulk_proto::SessionHost`): verdicts from the
/// policy backend within the policy timeout, and messages into the sink.
struct Host<P> {
    shared: Arc<Shared<P>>,
    /// The client's address, by which harvest-resistant mode counts (unspecified when the
    /// socket could not say).
    client: IpAddr,
    verdicts: Vec<Verdict>,
    counts: Counts,
    /// The spool file of the message in progress and what goes with it; `None` between
    /// messages, and always without a spool.
    draft: Option<Box<Streaming>>,
    /// A message ended (delivered or refused) since the connection last looked.
    message_ended: bool,
}

/// A message in progress on its way to the spool.
#[derive(Default)]
struct Streaming {
    /// Its file in `tmp/`, once its first chunk is written.
    file: Option<Draft>,
    /// A content buffer, swapped with the session's at each chunk.
    spare: Vec<u8>,
    /// This connection's share of the message memory, while it holds one.
    grant: Option<MemoryGrant>,
    /// A write failed: the message can no longer be stored, and gets `451` at its end.
    failed: bool,
}

impl<P: PolicyBackend> Connection<P> {
    pub(crate) fn new(stream: TcpStream, shared: Arc<Shared<P>>) -> Self {
        let session = Session::new(shared.config.session);
        let client = stream
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip());
        Connection {
            stream: Stream::Plain(stream),
            session,
            input: BytesMut::new(),
            output: Vec::new(),
            host: Host {
                shared,
                client,
                verdicts: Vec::new(),
                counts: Counts::default(),
                draft: None,
                message_ended: false,
            },
            line_since: None,
            data_deadline: None,
        }
    }

    /// Runs the session to its end. I/O errors end it quietly: a vanished client is normal.
    pub(crate) async fn run(mut self) {
        if let Err(error) = self.serve().await {
            debug!(%error, "connection ended by an I/O error");
        }
        if self.session.in_transaction() {
            debug!("connection closed inside a transaction; nothing was delivered for it");
        }
        // A message cut off by the end of the connection leaves no file behind.
        self.host.abandon().await;
        self.host.counts.add_to(&self.host.shared.stats);
    }

    async fn serve(&mut self) -> io::Result<()> {
        self.session.greet();
        self.flush().await?;
        loop {
            let input = match self.stream {
                Stream::Plain(_) => self.read_plain().await,
                _ => self.read_tls().await,
            };
            match input {
                Input::Read(n) => self.credit_data(n),
                Input::Nothing => continue,
                Input::End => return Ok(()),
                Input::Woke(Wake::Expired(why)) => return self.close(why).await,
                Input::Woke(Wake::Shutdown) => return self.close(Closing::ShuttingDown).await,
                Input::Woke(Wake::Failed(error)) => return Err(error),
                Input::Woke(Wake::Readable) => continue,
            }
            let consumed = self.process().await;
            self.track_deadlines(consumed);
            self.host.bound_content(&mut self.session).await;
            release_input(&mut self.input);
            self.flush().await?;
            if self.session.starting_tls() {
                // Boxed: the handshake's future holds a whole TLS session, which every
                // connection's future would otherwise carry.
                if !Box::pin(self.start_tls()).await {
                    return Ok(());
                }
                continue;
            }
            if self.session.ended_by_quit() {
                return self.after_quit().await;
            }
            if self.session.is_closed() {
                return self.linger().await;
            }
        }
    }

    /// After the reply to QUIT. A client that sent nothing after it (every well-behaved
    /// one: QUIT ends a pipelined group) gets a plain close: its own close then lands on
    /// an orphaned socket and wakes nothing here. The session has discarded whatever
    /// followed QUIT in what was read, so only the kernel can still hold input; if it
    /// does, a close now would reset the connection and could destroy the 221, so that
    /// client gets the linger.
    async fn after_quit(&mut self) -> io::Result<()> {
        if self.stream.tcp().is_some_and(input_waiting) {
            return self.linger().await;
        }
        if let Stream::Tls(tls) = &mut self.stream {
            // A TLS client expects close_notify before the end of the stream (a bare FIN
            // reads as a truncation attack to some); it is one small write.
            let _ = tokio::time::timeout(LINGER, tls.stream.shutdown()).await;
        }
        Ok(())
    }

    /// Waits for input on a plaintext connection and reads it.
    async fn read_plain(&mut self) -> Input {
        match self.wait_readable().await {
            Wake::Readable => {}
            other => return Input::Woke(other),
        }
        let Stream::Plain(stream) = &self.stream else {
            return Input::Woke(Wake::Failed(not_connected()));
        };
        // Read into the thread's chunk, not into reserved buffer space: `readable()` also
        // wakes spuriously (right after the greeting, typically), and an idle connection
        // must not keep a buffer it has not used. Nothing awaits while the chunk is
        // borrowed.
        match read_into(stream, &mut self.input) {
            Ok(0) => Input::End,
            Ok(n) => Input::Read(n),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Input::Nothing,
            Err(error) => Input::Woke(Wake::Failed(error)),
        }
    }

    /// Waits for input under TLS and reads it, with the same deadlines and shutdown as
    /// [`wait_readable`](Self::wait_readable). The wait is the read itself: rustls may hold
    /// decrypted bytes (a record larger than a chunk) while the socket shows nothing, so
    /// socket readiness would not tell. A read cut off by a deadline or shutdown loses
    /// nothing: tokio-rustls keeps what it took from the socket.
    async fn read_tls(&mut self) -> Input {
        let (at, why) = match self.deadline() {
            Ok(deadline) => deadline,
            Err(why) => return Input::Woke(Wake::Expired(why)),
        };
        let Stream::Tls(tls) = &mut self.stream else {
            return Input::Woke(Wake::Failed(not_connected()));
        };
        let shutdown = &self.host.shared.shutdown;
        let TlsSide { stream, chunk } = &mut **tls;
        let read = tokio::select! {
            biased;
            () = shutdown.grace_over.cancelled() => return Input::Woke(Wake::Shutdown),
            () = shutdown.draining.cancelled(), if !self.session.in_transaction() => {
                return Input::Woke(Wake::Shutdown);
            }
            read = tokio::time::timeout_at(at, stream.read(chunk)) => read,
        };
        match read {
            Err(_) => Input::Woke(Wake::Expired(why)),
            Ok(Ok(0)) => Input::End,
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&chunk[..n]);
                Input::Read(n)
            }
            Ok(Err(error)) => Input::Woke(Wake::Failed(error)),
        }
    }

    /// After the `220` to STARTTLS: drops the plaintext the client sent after STARTTLS,
    /// runs the TLS handshake within the line timeout, and starts the session over under
    /// TLS. `false` when the handshake failed and the connection is closed.
    ///
    /// Bytes after the STARTTLS line in the read that carried it came before the
    /// handshake, in the clear: executing them as if they had come under TLS is the
    /// command injection of CVE-2011-0411 (RFC 3207 section 6). They are discarded,
    /// logged and counted. Bytes the kernel still holds go to the handshake, which they
    /// fail unless they are a TLS ClientHello.
    async fn start_tls(&mut self) -> bool {
        let pipelined = self.input.len();
        if pipelined > 0 {
            self.host.counts.starttls_discarded = true;
            warn!(
                client = %self.host.client,
                octets = pipelined,
                "discarding plaintext pipelined after STARTTLS (never executed)"
            );
        }
        self.input = BytesMut::new();
        self.line_since = None;
        let shared = self.host.shared.clone();
        let Some(tls) = shared.config.tls.as_ref() else {
            // The session offers STARTTLS only when TLS is configured.
            warn!("STARTTLS accepted without a TLS configuration; closing");
            return false;
        };
        let Stream::Plain(socket) = std::mem::replace(&mut self.stream, Stream::Handshaking) else {
            return false;
        };
        let deadline = later(Instant::now(), shared.config.line_timeout);
        let handshake = TlsAcceptor::from(tls.server.clone()).accept(socket);
        let outcome = tokio::select! {
            biased;
            () = shared.shutdown.draining.cancelled() => Err("the server is shutting down".into()),
            done = tokio::time::timeout_at(deadline, handshake) => match done {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!(
                    "no handshake within the line timeout ({} s)",
                    shared.config.line_timeout.as_secs()
                )),
            },
        };
        match outcome {
            Ok(stream) => {
                let (_, session) = stream.get_ref();
                debug!(
                    client = %self.host.client,
                    version = ?session.protocol_version(),
                    cipher_suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
                    "TLS started"
                );
                self.stream = Stream::Tls(Box::new(TlsSide {
                    stream,
                    chunk: [0; TLS_READ_CHUNK],
                }));
                self.host.counts.tls = TlsOutcome::Started;
                self.session.tls_started();
                true
            }
            Err(error) => {
                self.host.counts.tls = TlsOutcome::Failed;
                info!(client = %self.host.client, %error, "TLS handshake failed; connection closed");
                false
            }
        }
    }

    /// Waits until the socket is readable, a deadline passes (the idle timeout, or the
    /// line or DATA deadline when one runs), or shutdown asks this session to end: at once
    /// when it is between transactions, at the end of the grace period when it is inside
    /// one. A line or DATA deadline already passed ends the session even if input is
    /// waiting: a client sending an endless line fast never lets the socket go quiet.
    async fn wait_readable(&self) -> Wake {
        let shutdown = &self.host.shared.shutdown;
        let (at, why) = match self.deadline() {
            Ok(deadline) => deadline,
            Err(why) => return Wake::Expired(why),
        };
        let Some(stream) = self.stream.tcp() else {
            return Wake::Failed(not_connected());
        };
        tokio::select! {
            biased;
            () = shutdown.grace_over.cancelled() => Wake::Shutdown,
            () = shutdown.draining.cancelled(), if !self.session.in_transaction() => Wake::Shutdown,
            ready = tokio::time::timeout_at(at, stream.readable()) => match ready {
                Err(_) => Wake::Expired(why),
                Ok(Ok(())) => Wake::Readable,
                Ok(Err(error)) => Wake::Failed(error),
            },
        }
    }

    /// The earliest deadline running (the idle timeout, the line or the DATA deadline)
    /// and what its passing means; `Err` with it when it has already passed.
    fn deadline(&self) -> Result<(Instant, Closing), Closing> {
        let config = &self.host.shared.config;
        let now = Instant::now();
        let (mut at, mut why) = (later(now, config.idle_timeout), Closing::IdleTimeout);
        let running = [
            self.line_since
                .map(|since| (later(since, config.line_timeout), Closing::LineTimeout)),
            self.data_deadline.map(|data| (data, Closing::DataTimeout)),
        ];
        for (deadline, reason) in running.into_iter().flatten() {
            if deadline < at {
                (at, why) = (deadline, reason);
            }
        }
        if at <= now {
            return Err(why);
        }
        Ok((at, why))
    }

    /// Feeds the buffered input to the session until it needs more; returns how many bytes
    /// it consumed.
    async fn process(&mut self) -> usize {
        let consumed = self.session.feed(&self.input, &mut self.host).await;
        self.input.advance(consumed);
        consumed
    }

    /// In DATA, `n` octets just read extend the DATA deadline by `n / min_data_rate`
    /// seconds, to at most `data_timeout` from now (docs/protocol.md).
    fn credit_data(&mut self, n: usize) {
        let Some(deadline) = self.data_deadline else {
            return;
        };
        let config = &self.host.shared.config;
        let credit = Duration::from_secs_f64(n as f64 / config.min_data_rate.max(1) as f64);
        let cap = later(Instant::now(), config.data_timeout);
        self.data_deadline = Some(later(deadline, credit).min(cap));
    }

    /// After a read was processed: starts, keeps or stops the line deadline and the DATA
    /// deadline by where the session now stands. `consumed`: bytes the read's processing
    /// consumed.
    fn track_deadlines(&mut self, consumed: usize) {
        // Read only when a deadline starts: most reads end between whole commands.
        let mut clock = None;
        let mut now = || *clock.get_or_insert_with(Instant::now);
        let config = &self.host.shared.config;
        let session = &self.session;
        // A partial line in the buffer, or an over-long one being discarded. If the read
        // consumed anything in command mode, the partial line left began after it (what
        // was buffered before held no line end), in this read; an over-long line goes on.
        let mid_line = !session.in_data()
            && !session.is_closed()
            && (session.discarding_line() || !self.input.is_empty());
        self.line_since = match self.line_since {
            _ if !mid_line => None,
            Some(since) if consumed == 0 || session.discarding_line() => Some(since),
            _ => Some(now()),
        };
        // A message that ended lets the next one, even in the same read, start afresh.
        if std::mem::take(&mut self.host.message_ended) {
            self.data_deadline = None;
        }
        self.data_deadline = match self.data_deadline {
            _ if !session.in_data() => None,
            None => Some(later(now(), config.data_timeout)),
            running => running,
        };
    }

    /// Sends every queued reply in one write. A client that stops reading cannot hold the
    /// connection forever: the write is bounded by the idle timeout too.
    async fn flush(&mut self) -> io::Result<()> {
        self.output.clear();
        self.session
            .flush(&self.host.shared.config.identity, &mut self.output);
        if self.output.is_empty() {
            return Ok(());
        }
        let write = self.stream.write_all(&self.output);
        match tokio::time::timeout(self.host.shared.config.idle_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    async fn close(&mut self, why: Closing) -> io::Result<()> {
        // A pending RCPT keeps its place before the 421; it gets a verdict like any other.
        self.session.ask_verdicts(&mut self.host).await;
        self.session.close(why);
        self.flush().await?;
        self.linger().await
    }

    /// Closes our side, then reads and discards what the client still sends, for a while.
    async fn linger(&mut self) -> io::Result<()> {
        let linger = if self.host.shared.shutdown.draining.is_cancelled() {
            SHUTDOWN_LINGER
        } else {
            LINGER
        };
        let deadline = tokio::time::Instant::now() + linger;
        // Bounded: under TLS the shutdown writes close_notify, which waits for room in the
        // send buffer, and a client that never reads would hold the connection forever.
        match tokio::time::timeout_at(deadline, self.stream.shutdown()).await {
            Ok(result) => result?,
            Err(_) => return Ok(()),
        }
        // On the heap, and only while closing: an array here would sit in every
        // connection's future for its whole life.
        let mut sink = vec![0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
        Ok(())
    }
}

impl<P: PolicyBackend> SessionHost for Host<P> {
    /// Resolves the pending RCPTs in one backend call, bounded by the policy timeout.
    async fn resolve(&mut self, session: &mut Session) {
        let pending = session.pending();
        let config = &self.shared.config;
        // Harvest-resistant mode: whether this batch is delayed is decided now, before its
        // verdicts are known, by the client address's previous window (harvest.rs).
        let harvest_delay = self
            .shared
            .harvest
            .as_ref()
            .map_or(Duration::ZERO, |table| {
                table.delay(self.client, pending.len(), std::time::Instant::now())
            });
        self.verdicts.clear();
        let lookup = self.shared.policy.lookup(pending, &mut self.verdicts);
        let result = match tokio::time::timeout(config.policy_timeout, lookup).await {
            Ok(Ok(())) if self.verdicts.len() == pending.len() => Ok(&self.verdicts[..]),
            Ok(Ok(())) => {
                warn!(
                    backend = self.shared.policy.name(),
                    asked = pending.len(),
                    got = self.verdicts.len(),
                    "policy backend answered the wrong number of verdicts"
                );
                Err(())
            }
            Ok(Err(error)) => {
                warn!(%error, "policy lookup failed; answering 451");
                Err(())
            }
            Err(_) => {
                warn!(
                    backend = self.shared.policy.name(),
                    timeout_ms = config.policy_timeout.as_millis() as u64,
                    "policy lookup timed out; answering 451"
                );
                Err(())
            }
        };
        let counts = &mut self.counts;
        counts.rcpts += pending.len() as u64;
        match result {
            Ok(verdicts) => {
                if let Some(table) = &self.shared.harvest {
                    let unknown = verdicts
                        .iter()
                        .filter(|v| **v == Verdict::UnknownMailbox)
                        .count();
                    let unknown = u32::try_from(unknown).unwrap_or(u32::MAX);
                    table.charge(self.client, unknown, std::time::Instant::now());
                }
                for verdict in verdicts {
                    match verdict {
                        Verdict::Accept => counts.accepted += 1,
                        Verdict::OptedOut => counts.opted_out += 1,
                        Verdict::UnknownMailbox => counts.unknown += 1,
                        Verdict::NotLocal => counts.not_local += 1,
                    }
                }
            }
            Err(()) => counts.tempfail += pending.len() as u64,
        }
        session.resolve(result);
        if !harvest_delay.is_zero() {
            debug!(
                delay_ms = harvest_delay.as_millis() as u64,
                client = %self.client,
                "harvest-resistant delay"
            );
            tokio::time::sleep(harvest_delay).await;
        }
    }

    /// Hands the message that just ended to the sink, then tells the session how it went.
    async fn deliver(&mut self, session: &mut Session) {
        let result = match self.shared.spool.clone() {
            None => Ok(self.next_id()),
            Some(spool) => self.store(&spool, session).await,
        };
        if result.is_ok() {
            self.counts.messages += 1;
        }
        self.end_message().await;
        session.delivered(result);
    }

    /// Writes the content the session holds to the message's spool file.
    async fn content(&mut self, session: &mut Session) {
        let Some(spool) = self.shared.spool.clone() else {
            session.swap_content(&mut Vec::new());
            return;
        };
        let streaming = self.draft.get_or_insert_default();
        session.swap_content(&mut streaming.spare);
        if streaming.failed {
            return;
        }
        let chunk = std::mem::take(&mut streaming.spare);
        let file = streaming.file.take();
        let (id, head) = match &file {
            Some(draft) => (draft.id(), Vec::new()),
            None => (self.next_id(), Spool::envelope(&session.message())),
        };
        let written = tokio::task::spawn_blocking(move || {
            let mut draft = match file {
                Some(draft) => draft,
                None => spool.create(id, &head)?,
            };
            // On error the draft is dropped here, on this blocking thread: its file goes.
            draft.append(&chunk)?;
            Ok::<_, io::Error>((draft, chunk))
        })
        .await;
        let streaming = self.draft.get_or_insert_default();
        match written {
            Ok(Ok((draft, mut chunk))) => {
                chunk.clear();
                streaming.spare = chunk;
                streaming.file = Some(draft);
            }
            Ok(Err(error)) => {
                warn!(%error, queue_id = %id, "spool write failed; the message will get 451");
                streaming.failed = true;
            }
            Err(error) => {
                warn!(%error, queue_id = %id, "spool task failed; the message will get 451");
                streaming.failed = true;
            }
        }
    }

    /// The message was refused at its end: its spool file goes.
    async fn refused(&mut self, _session: &mut Session) {
        self.end_message().await;
    }
}

impl<P> Host<P> {
    fn next_id(&self) -> QueueId {
        QueueId(self.shared.next_queue_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Stores the message that just ended: the rest of its content after what its spool
    /// file holds (or all of it, with its envelope, for a message that fit one chunk),
    /// then fsync, rename into `new/`, fsync of `new/`, all on a blocking thread.
    async fn store(&mut self, spool: &Spool, session: &mut Session) -> Result<QueueId, ()> {
        let mut streaming = self.draft.take().unwrap_or_default();
        if streaming.failed {
            return Err(());
        }
        let mut rest = Vec::new();
        session.swap_content(&mut rest);
        let file = streaming.file.take();
        let (id, head) = match &file {
            Some(draft) => (draft.id(), Vec::new()),
            None => (self.next_id(), Spool::envelope(&session.message())),
        };
        let spool = spool.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut draft = match file {
                Some(draft) => draft,
                None => spool.create(id, &head)?,
            };
            draft.append(&rest)?;
            spool.commit(draft)
        })
        .await;
        match stored {
            Ok(Ok(_path)) => Ok(id),
            Ok(Err(error)) => {
                warn!(%error, queue_id = %id, "spool write failed; answering 451");
                Err(())
            }
            Err(error) => {
                warn!(%error, queue_id = %id, "spool task failed; answering 451");
                Err(())
            }
        }
    }

    /// Whatever is left of the message that just ended goes: its temporary file (removed
    /// on a blocking thread), its buffers, its share of the message memory.
    async fn end_message(&mut self) {
        self.message_ended = true;
        self.abandon().await;
    }

    /// Drops the message in progress, if any, removing its temporary file.
    pub(crate) async fn abandon(&mut self) {
        let Some(mut streaming) = self.draft.take() else {
            return;
        };
        if let Some(file) = streaming.file.take() {
            // The draft removes its file when dropped: a blocking call, so not here.
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
        }
    }

    /// Keeps the content a connection holds in memory within the server's budget: in DATA
    /// with a spool, a connection without a share of the message memory (two content
    /// chunks) tries to get one; if there is no room, what this read brought goes to the
    /// spool file at once.
    async fn bound_content(&mut self, session: &mut Session)
    where
        Self: SessionHost,
    {
        if self.shared.spool.is_none() || !session.in_data() {
            return;
        }
        let streaming = self.draft.get_or_insert_default();
        if streaming.grant.is_none() {
            let octets = self.shared.config.session.content_chunk.saturating_mul(2);
            streaming.grant = MessageMemory::grant(&self.shared.message_memory, octets);
        }
        if streaming.grant.is_none() && !session.message().body.is_empty() {
            SessionHost::content(self, session).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A client and the server's side of its connection, on loopback.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    async fn readable_within(stream: &TcpStream, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), stream.readable())
            .await
            .is_ok()
    }

    #[test]
    fn input_keeps_a_partial_line_not_the_read_that_brought_it() {
        // A full read, consumed but for a partial line: the line moves to a buffer of its
        // own, and the read's 16 KiB go.
        let mut input = BytesMut::new();
        input.extend_from_slice(&[b'x'; READ_CHUNK]);
        let read = input.as_ptr();
        input.advance(READ_CHUNK - 100);
        release_input(&mut input);
        assert_eq!(&input[..], &[b'x'; 100][..]);
        assert!(!std::ptr::eq(
            input.as_ptr(),
            read.wrapping_add(READ_CHUNK - 100)
        ));
        assert!(input.capacity() <= SHORT_REST, "{}", input.capacity());
        // A longer rest (content in DATA) stays where it is.
        let mut input = BytesMut::new();
        input.extend_from_slice(&[b'y'; READ_CHUNK]);
        input.advance(READ_CHUNK / 2);
        let at = input.as_ptr();
        release_input(&mut input);
        assert_eq!((input.as_ptr(), input.len()), (at, READ_CHUNK / 2));
        // Nothing left: no buffer at all.
        input.advance(READ_CHUNK / 2);
        release_input(&mut input);
        assert_eq!(input.capacity(), 0);
    }

    #[tokio::test]
    async fn a_pipelined_transaction_of_300_rcpts_is_one_read() {
        let (mut client, server) = connected().await;
        let mut transaction = b"BULK FROM:<list@sender.example>\r\n".to_vec();
        for i in 0..300 {
            transaction.extend_from_slice(
                format!("RCPT TO:<subscriber.{i:05}@mail.domain.example>\r\n").as_bytes(),
            );
        }
        transaction.extend_from_slice(b"DATA\r\n");
        assert!((3 * 4096..READ_CHUNK).contains(&transaction.len()));
        client.write_all(&transaction).await.unwrap();
        // Wait until the whole of it is queued, then read as a plaintext connection does.
        let mut peeked = vec![0u8; READ_CHUNK];
        for _ in 0..500 {
            if server.peek(&mut peeked).await.unwrap() == transaction.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut input = BytesMut::new();
        assert_eq!(read_into(&server, &mut input).unwrap(), transaction.len());
        assert_eq!(
            &input[..],
            &transaction[..],
            "one read takes the whole transaction"
        );
    }

    #[tokio::test]
    async fn a_short_read_leaves_the_socket_waiting_for_more_input() {
        let (mut client, server) = connected().await;
        let mut chunk = [0u8; READ_CHUNK];

        client.write_all(b"EHLO x\r\n").await.unwrap();
        assert!(readable_within(&server, 5_000).await);
        assert_eq!(read_chunk(&server, &mut chunk).unwrap(), 8);
        // Drained: the next wait sleeps. (After `try_read` it returned at once, for a read
        // that then failed with EAGAIN.)
        assert!(!readable_within(&server, 100).await, "readiness kept");
        let nothing = read_chunk(&server, &mut chunk).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);

        // More input wakes it again, and nothing is lost.
        client.write_all(b"QUIT\r\n").await.unwrap();
        assert!(readable_within(&server, 5_000).await);
        assert_eq!(read_chunk(&server, &mut chunk).unwrap(), 6);
        assert_eq!(&chunk[..6], b"QUIT\r\n");

        // A full chunk leaves readiness set: more may be waiting, and is.
        client.write_all(&[b'x'; READ_CHUNK + 10]).await.unwrap();
        let mut total = 0;
        while total < READ_CHUNK + 10 {
            assert!(readable_within(&server, 5_000).await);
            match read_chunk(&server, &mut chunk) {
                Ok(n) => total += n,
                Err(error) => assert_eq!(error.kind(), io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(total, READ_CHUNK + 10);

        // End of input reads as 0.
        drop(client);
        assert!(readable_within(&server, 5_000).await);
        assert_eq!(read_chunk(&server, &mut chunk).unwrap(), 0);
    }
}
