//! One client session over TCP: the commands of a [`SessionSpec`], every reply parsed with
//! `bulk_proto::parse_reply`, timed and verified.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use bulk_population::{Kind, SessionSpec};
use bulk_proto::{Command, EnhancedCode, ForwardPath, MailParams, ReversePath, TransactionKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::message::write_message;
use crate::record::Phase;
use crate::result::ErrorKind;
use crate::verify::{Mismatches, ReplyClass, Verifier};

/// What a session needs besides its spec.
#[derive(Clone, Debug)]
pub(crate) struct SessionContext {
    pub target: SocketAddr,
    pub helo_name: String,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub verifier: Verifier,
}

/// Everything one session measured, handed to a recorder shard at its end.
#[derive(Debug, Default)]
pub(crate) struct SessionLog {
    /// (phase, latency in µs, completion time as Instant).
    pub samples: Vec<(Phase, u64, Instant)>,
    pub rcpts: u64,
    pub by_class: [u64; 6],
    pub mismatches: Mismatches,
    /// The server did not advertise BULK; the session used MAIL FROM.
    pub bulk_fallback: bool,
    pub messages: u64,
}

impl SessionLog {
    pub fn clear(&mut self) {
        self.samples.clear();
        self.rcpts = 0;
        self.by_class = [0; 6];
        self.mismatches = Mismatches::default();
        self.bulk_fallback = false;
        self.messages = 0;
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

/// A parsed reply: what verification and flow control need, without the text.
#[derive(Clone, Copy, Debug)]
struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
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

struct Connection<'a> {
    stream: TcpStream,
    /// The worker's read buffer, reused from session to session.
    buf: &'a mut Vec<u8>,
    pos: usize,
    /// Byte range of the last reply in `buf`, for mismatch examples.
    last: (usize, usize),
    /// Whether a read has succeeded yet: until then an error may be the connect's.
    confirmed: bool,
    deadline: Deadline<'a>,
}

impl Connection<'_> {
    async fn read_reply(&mut self) -> Result<Reply, ErrorKind> {
        self.read_reply_with(|_| ()).await.map(|(reply, ())| reply)
    }

    /// Reads one reply, letting `inspect` look at it while it is borrowed from the buffer.
    async fn read_reply_with<T>(
        &mut self,
        mut inspect: impl FnMut(&bulk_proto::ServerReply<'_>) -> T,
    ) -> Result<(Reply, T), ErrorKind> {
        loop {
            match bulk_proto::parse_reply(&self.buf[self.pos..]) {
                Ok(Some((reply, used))) => {
                    let seen = inspect(&reply);
                    let parsed = Reply {
                        code: reply.code,
                        enhanced: reply.enhanced,
                    };
                    self.last = (self.pos, self.pos + used);
                    self.pos += used;
                    return Ok((parsed, seen));
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

    fn last_text(&self) -> String {
        let raw = &self.buf[self.last.0..self.last.1.min(self.buf.len())];
        String::from_utf8_lossy(raw).trim_end().to_owned()
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        match self.deadline.within(self.stream.write_all(bytes)).await {
            None => Err(ErrorKind::Timeout),
            Some(Err(error)) => Err(ErrorKind::from_io(&error)),
            Some(Ok(())) => Ok(()),
        }
    }

    /// Expects a reply of `class` (2, 3 or 4/5 first digit); a 421 means the server ended
    /// the session.
    fn expect(reply: Reply, first_digit: u16) -> Result<(), ErrorKind> {
        if reply.code / 100 == first_digit {
            Ok(())
        } else if reply.code == 421 {
            Err(ErrorKind::ServerClosed421)
        } else {
            Err(ErrorKind::UnexpectedReply)
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
        stream,
        buf: read,
        pos: 0,
        last: (0, 0),
        confirmed: false,
        deadline,
    };
    let greeting = conn.read_reply().await;
    // A connect that failed shows first here, as the read's error: then it has no
    // connect latency. Anything else means the connection was made.
    if !matches!(greeting, Err(kind) if kind.is_connect()) {
        log.samples.push((
            Phase::Connect,
            micros(connected.saturating_duration_since(intended)),
            connected,
        ));
    }
    let greeting = greeting?;
    log.sample(Phase::Greeting, connected);
    Connection::expect(greeting, 2)?;

    scratch.clear();
    Command::Ehlo {
        domain: ctx.helo_name.as_bytes(),
    }
    .encode(scratch);
    let sent = Instant::now();
    conn.send(scratch).await?;
    let (ehlo, (bulk, pipelining)) = conn
        .read_reply_with(|r| (r.has_keyword("BULK"), r.has_keyword("PIPELINING")))
        .await?;
    log.sample(Phase::Ehlo, sent);
    Connection::expect(ehlo, 2)?;

    let wants_bulk = spec.kind == Kind::Bulk;
    let use_bulk = wants_bulk && bulk;
    log.bulk_fallback = wants_bulk && !bulk;
    let kind = if use_bulk {
        TransactionKind::Bulk
    } else {
        TransactionKind::Mail
    };
    let pipelined = spec.pipelining && pipelining;
    let with_data = spec.message_size > 0;

    // The FROM command, then the RCPTs (and DATA) either in one write (PIPELINING,
    // RFC 2920: DATA ends the group) or one at a time.
    scratch.clear();
    Command::Mail {
        kind,
        from: ReversePath::Mailbox(spec.sender.as_bytes()),
        params: MailParams {
            size: with_data.then_some(u64::from(spec.message_size)),
            body: None,
        },
    }
    .encode(scratch);
    if pipelined {
        for recipient in &spec.recipients {
            Command::Rcpt {
                to: ForwardPath::Mailbox(recipient.address.as_bytes()),
            }
            .encode(scratch);
        }
        if with_data {
            Command::Data.encode(scratch);
        }
    }
    // Pipelined, every reply of the group (FROM, RCPTs, DATA) is timed from this write.
    let sent = Instant::now();
    conn.send(scratch).await?;
    let from = conn.read_reply().await?;
    log.sample(Phase::From, sent);
    Connection::expect(from, 2)?;
    if pipelined {
        let mut accepted = 0u32;
        for i in 0..spec.recipients.len() {
            let reply = conn.read_reply().await?;
            log.sample(Phase::Rcpt, sent);
            accepted += u32::from(verify_rcpt(ctx, spec, use_bulk, i, reply, &conn, log)?);
        }
        if with_data {
            // DATA was sent with the group: with a recipient accepted it must get 354,
            // without one a refusal (RFC 2920 section 3.1).
            let data = conn.read_reply().await?;
            log.sample(Phase::Data, sent);
            expect_data(data, accepted > 0)?;
            if data.code == 354 {
                send_message(&mut conn, spec, scratch, log).await?;
            }
        }
    } else {
        let mut accepted = 0u32;
        for (i, recipient) in spec.recipients.iter().enumerate() {
            scratch.clear();
            Command::Rcpt {
                to: ForwardPath::Mailbox(recipient.address.as_bytes()),
            }
            .encode(scratch);
            let sent = Instant::now();
            conn.send(scratch).await?;
            let reply = conn.read_reply().await?;
            log.sample(Phase::Rcpt, sent);
            accepted += u32::from(verify_rcpt(ctx, spec, use_bulk, i, reply, &conn, log)?);
        }
        // Without pipelining a client sends DATA only when a recipient was accepted, as
        // real clients do.
        if with_data && accepted > 0 {
            scratch.clear();
            Command::Data.encode(scratch);
            let sent = Instant::now();
            conn.send(scratch).await?;
            let data = conn.read_reply().await?;
            log.sample(Phase::Data, sent);
            expect_data(data, true)?;
            send_message(&mut conn, spec, scratch, log).await?;
        }
    }

    scratch.clear();
    Command::Quit.encode(scratch);
    let sent = Instant::now();
    conn.send(scratch).await?;
    let quit = conn.read_reply().await?;
    log.sample(Phase::Quit, sent);
    Connection::expect(quit, 2)?;
    log.sample(Phase::Session, intended);
    Ok(())
}

async fn send_message(
    conn: &mut Connection<'_>,
    spec: &SessionSpec,
    scratch: &mut Vec<u8>,
    log: &mut SessionLog,
) -> Result<(), ErrorKind> {
    scratch.clear();
    write_message(spec, scratch);
    let sent = Instant::now();
    conn.send(scratch).await?;
    let end = conn.read_reply().await?;
    log.sample(Phase::EndOfData, sent);
    match end.code {
        200..=299 => {}
        421 => return Err(ErrorKind::ServerClosed421),
        400..=499 => return Err(ErrorKind::MessageTempfail),
        _ => return Err(ErrorKind::MessageRefused),
    }
    log.messages += 1;
    Ok(())
}

/// Checks the reply to DATA: 354 when a recipient was accepted (a 4xx then is a temporary
/// failure of the message, anything else a refusal), and anything but 354 when none was:
/// a server that invites a message with no recipient to deliver it to is wrong.
fn expect_data(reply: Reply, any_accepted: bool) -> Result<(), ErrorKind> {
    match (reply.code, any_accepted) {
        (421, _) => Err(ErrorKind::ServerClosed421),
        (354, true) => Ok(()),
        (354, false) => Err(ErrorKind::DataRefused),
        (_, false) => Ok(()),
        (400..=499, true) => Err(ErrorKind::DataTempfail),
        (_, true) => Err(ErrorKind::DataRefused),
    }
}

/// Classifies, counts and checks one RCPT reply; returns whether it was accepted. A 421
/// ends the session (the server closes after it).
fn verify_rcpt(
    ctx: &SessionContext,
    spec: &SessionSpec,
    bulk: bool,
    index: usize,
    reply: Reply,
    conn: &Connection<'_>,
    log: &mut SessionLog,
) -> Result<bool, ErrorKind> {
    if reply.code == 421 {
        return Err(ErrorKind::ServerClosed421);
    }
    let actual = ReplyClass::of(reply.code, reply.enhanced);
    log.rcpts += 1;
    log.by_class[ReplyClass::ALL
        .iter()
        .position(|c| *c == actual)
        .unwrap_or(5)] += 1;
    Ok(ctx.verifier.check_rcpt(
        spec,
        bulk,
        index,
        actual,
        || conn.last_text(),
        &mut log.mismatches,
    ))
}
