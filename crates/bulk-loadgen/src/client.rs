//! One client session over TCP: the [`Script`] of a [`SessionSpec`] driven over a socket,
//! every reply parsed with `bulk_proto::parse_reply` and timed. A STARTTLS session wraps
//! its socket in TLS after STARTTLS's 220, and goes on over it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use bulk_population::SessionSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::client::TlsStream;

use crate::record::Phase;
use crate::result::ErrorKind;
use crate::script::{Counts, Script};
use crate::tls::TlsClient;
use crate::verify::Verifier;

/// What a session needs besides its spec.
#[derive(Clone, Debug)]
pub(crate) struct SessionContext {
    pub target: SocketAddr,
    pub helo_name: String,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub verifier: Verifier,
    /// The TLS client of STARTTLS sessions.
    pub tls: TlsClient,
}

/// Everything one session measured, handed to a recorder shard at its end.
#[derive(Debug, Default)]
pub(crate) struct SessionLog {
    /// (phase, latency in µs, completion time as Instant).
    pub samples: Vec<(Phase, u64, Instant)>,
    /// Replies by class, mismatches, messages, fallback.
    pub counts: Counts,
}

impl SessionLog {
    pub fn clear(&mut self) {
        self.samples.clear();
        self.counts.clear();
    }

    fn sample(&mut self, phase: Phase, since: Instant) -> Instant {
        let now = Instant::now();
        self.samples.push((phase, micros(now - since), now));
        now
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A worker's buffers, reused from session to session: what it writes, what it reads.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub write: Vec<u8>,
    pub read: Vec<u8>,
}

/// The connect and per-command timeouts of one session, on one timer for the whole session.
///
/// `tokio::time::timeout` around every read would insert a timer into the runtime's wheel
/// and remove it again per command. Here each wait's deadline is `now + limit`, and the one
/// `Sleep` is armed at the first deadline. Deadlines mostly move later, so when the sleep
/// fires before the current deadline it is re-armed to that deadline, and when it fires
/// after, the wait has timed out; only a deadline earlier than the armed one (a command
/// timeout shorter than the connect timeout) re-arms it at once. A session shorter than
/// its timeouts touches the wheel twice: at its first wait (the connect), and when it
/// ends.
struct Deadline<'a> {
    sleep: Pin<&'a mut Sleep>,
    current: tokio::time::Instant,
    timeout: Duration,
}

impl Deadline<'_> {
    /// Runs `future` within the command timeout from now: `None` if it did not finish in
    /// time.
    async fn within<F: Future>(&mut self, future: F) -> Option<F::Output> {
        self.within_limit(self.timeout, future).await
    }

    /// Runs `future` within `limit` from now: `None` if it did not finish in time.
    async fn within_limit<F: Future>(&mut self, limit: Duration, future: F) -> Option<F::Output> {
        self.current = tokio::time::Instant::now() + limit;
        if self.sleep.deadline() > self.current {
            let current = self.current;
            self.sleep.as_mut().reset(current);
        }
        let mut future = pin!(future);
        loop {
            tokio::select! {
                // The command first: when it is ready, the timer is not even polled.
                biased;
                output = &mut future => return Some(output),
                () = self.sleep.as_mut() => {
                    if tokio::time::Instant::now() >= self.current {
                        return None;
                    }
                    let current = self.current;
                    self.sleep.as_mut().reset(current);
                }
            }
        }
    }
}

/// A session's socket: plain TCP until STARTTLS, then TLS over it.
///
/// An enum rather than a boxed trait object, so that a plain session's reads and writes
/// are the socket's own, with a branch in front and no allocation; the TLS stream (a few
/// kilobytes of rustls state) is boxed so that it does not size every session's future.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The socket is with the handshake (and is gone if it failed).
    Upgrading,
}

impl Stream {
    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read_buf(buf).await,
            Stream::Tls(tls) => tls.read_buf(buf).await,
            Stream::Upgrading => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(bytes).await,
            Stream::Tls(tls) => {
                // rustls may keep records it could not write yet: flushing sends them
                // before the session waits for their replies.
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Stream::Upgrading => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

struct Connection<'a> {
    stream: Stream,
    /// The worker's read buffer, reused from session to session.
    buf: &'a mut Vec<u8>,
    pos: usize,
    /// Whether a read has succeeded yet: until then an error may be the connect's.
    confirmed: bool,
    deadline: Deadline<'a>,
}

impl Connection<'_> {
    /// Reads one reply and hands it to `take` while it is borrowed from the buffer.
    async fn read_reply_with<T>(
        &mut self,
        mut take: impl FnMut(&bulk_proto::ServerReply<'_>) -> T,
    ) -> Result<T, ErrorKind> {
        loop {
            match bulk_proto::parse_reply(&self.buf[self.pos..]) {
                Ok(Some((reply, used))) => {
                    let taken = take(&reply);
                    self.pos += used;
                    return Ok(taken);
                }
                Ok(None) => {}
                Err(_) => return Err(ErrorKind::Protocol),
            }
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            } else if self.pos > 64 * 1024 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.buf.reserve(4096);
            let read = self.deadline.within(self.stream.read_buf(self.buf)).await;
            match read {
                None => return Err(ErrorKind::Timeout),
                Some(Ok(0)) => return Err(ErrorKind::Closed),
                Some(Ok(_)) => self.confirmed = true,
                Some(Err(error)) if self.confirmed => return Err(ErrorKind::from_io(&error)),
                Some(Err(error)) => return Err(ErrorKind::from_first_read(&error)),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        match self.deadline.within(self.stream.write_all(bytes)).await {
            None => Err(ErrorKind::Timeout),
            Some(Err(error)) => Err(ErrorKind::from_io(&error)),
            Some(Ok(())) => Ok(()),
        }
    }

    /// After STARTTLS's 220: the TLS handshake over the socket, within the command
    /// timeout; the session goes on over TLS.
    async fn start_tls(&mut self, tls: &TlsClient) -> Result<(), ErrorKind> {
        // Nothing may follow the 220 before the handshake: bytes there would be read as
        // if they had come over TLS (the injection of CVE-2011-0411).
        if self.pos != self.buf.len() {
            return Err(ErrorKind::TlsHandshake);
        }
        self.buf.clear();
        self.pos = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(ErrorKind::Protocol);
        };
        let handshake = tls.connector().connect(tls.server_name(), tcp);
        match self.deadline.within(handshake).await {
            None => Err(ErrorKind::Timeout),
            Some(Err(error)) => Err(ErrorKind::from_tls(&error)),
            Some(Ok(stream)) => {
                self.stream = Stream::Tls(Box::new(stream));
                Ok(())
            }
        }
    }
}

/// Starts a connection to `target` (from `source`, if given) and waits until the socket is
/// writable, within the connect timeout. Returns the stream and when it became writable.
///
/// Unlike `TcpSocket::connect`, this does not ask the socket for its error afterwards (one
/// `getsockopt` per session): a failed connect also wakes the writer, and its error is
/// then what the first read returns, which `run_session` counts as a connect failure
/// ([`ErrorKind::from_first_read`], [`ErrorKind::is_connect`]).
async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    deadline: &mut Deadline<'_>,
    limit: Duration,
) -> Result<(TcpStream, Instant), ErrorKind> {
    let refused = |e: io::Error| ErrorKind::from_connect_io(&e);
    let domain = socket2::Domain::for_address(target);
    let socket = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )
    .map_err(refused)?;
    // The generator writes each group of commands whole and then waits for its replies,
    // so Nagle's algorithm would seldom hold anything back; NODELAY makes sure it never
    // does.
    socket.set_tcp_nodelay(true).map_err(refused)?;
    if let Some(ip) = source {
        // Let connect() pick the port with the destination known (Linux
        // IP_BIND_ADDRESS_NO_PORT): bind() then costs no port search, and ports are shared
        // across destinations, as without a bind. Best effort: without it, bind picks.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let on: libc::c_int = 1;
            // SAFETY: setsockopt on our own socket, with a pointer to a live c_int.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .map_err(refused)?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(refused(error)),
    }
    let stream = TcpStream::from_std(socket.into()).map_err(refused)?;
    match deadline.within_limit(limit, stream.writable()).await {
        None => Err(ErrorKind::ConnectTimeout),
        Some(Err(error)) => Err(refused(error)),
        Some(Ok(())) => Ok((stream, Instant::now())),
    }
}

/// Runs one session. `intended` is when it should have started (open loop) or when it
/// did (closed loop); connect and session latencies count from it. Returns the session's
/// failure, if any; what was measured before it is in `log` either way.
pub(crate) async fn run_session(
    spec: &SessionSpec,
    ctx: &SessionContext,
    source: Option<IpAddr>,
    intended: Instant,
    log: &mut SessionLog,
    buffers: &mut Buffers,
) -> Result<(), ErrorKind> {
    // Counted whether or not the session gets as far as STARTTLS.
    log.counts.starttls = spec.starttls;
    let sleep = tokio::time::sleep(ctx.connect_timeout);
    tokio::pin!(sleep);
    let mut deadline = Deadline {
        sleep,
        current: tokio::time::Instant::now(),
        timeout: ctx.command_timeout,
    };
    let (stream, connected) =
        connect(ctx.target, source, &mut deadline, ctx.connect_timeout).await?;
    let Buffers {
        write: scratch,
        read,
    } = buffers;
    read.clear();
    let mut conn = Connection {
        stream: Stream::Plain(stream),
        buf: read,
        pos: 0,
        confirmed: false,
        deadline,
    };
    let mut script = Script::new(spec, &ctx.verifier, ctx.helo_name.as_bytes());
    // Every reply is timed from the write that carried its command (pipelined: the
    // group's), the greeting from the connect.
    let mut since = connected;
    // When the last reply was read: a TLS handshake counts from STARTTLS's 220.
    let mut replied = connected;
    let mut first = true;
    while let Some(phase) = script.expecting() {
        if phase == Phase::TlsHandshake {
            conn.start_tls(&ctx.tls).await?;
            log.sample(phase, replied);
            script.on_handshake();
            continue;
        }
        scratch.clear();
        if script.take_write(scratch) {
            since = Instant::now();
            conn.send(scratch).await?;
        }
        let counts = &mut log.counts;
        let outcome = conn
            .read_reply_with(|reply| script.on_reply(reply, counts))
            .await;
        if std::mem::take(&mut first) {
            // A connect that failed shows first here, as the read's error: then it has no
            // connect latency. Anything else means the connection was made.
            if !matches!(outcome, Err(kind) if kind.is_connect()) {
                log.samples.push((
                    Phase::Connect,
                    micros(connected.saturating_duration_since(intended)),
                    connected,
                ));
            }
        }
        let judged = outcome?;
        replied = log.sample(phase, since);
        judged?;
    }
    log.sample(Phase::Session, intended);
    Ok(())
}
