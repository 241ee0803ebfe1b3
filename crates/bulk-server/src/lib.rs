//! The tokio SMTP server of bulkbench: accept loop, one task per connection driving a
//! [`bulk_proto::Session`], limits, timeouts, spool and graceful shutdown.
//!
//! [`bind`] makes a listener with a chosen backlog; [`run`] serves it until the shutdown
//! future completes, with any [`PolicyBackend`], and returns the server's [`StatsSnapshot`].
//! The server does not know which backend it runs, and does no SMTP parsing of its own.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bulk_policy::{MemoryBackend, NormalizeConfig, Population};
//! use bulk_server::{ServerConfig, bind, run};
//!
//! let population = Population::parse(b"@example.org\topt-in\nann@example.org\tin\n",
//!                                     NormalizeConfig::default())?;
//! let listener = bind("127.0.0.1:0".parse()?, 1024)?;
//! let policy = Arc::new(MemoryBackend::new(population));
//! // Any future stops the server: a signal, a oneshot, a timer. This one never fires.
//! let stats = run(listener, ServerConfig::default(), policy, std::future::pending::<()>()).await?;
//! println!("served {} recipients", stats.rcpts);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod connection;
mod harvest;
pub mod spool;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulk_policy::PolicyBackend;
use bulk_proto::{Closing, Reply, ServerIdentity, SessionConfig, TlsPolicy};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::connection::Connection;
pub use crate::harvest::HarvestLimits;
pub use crate::spool::{SinkConfig, Spool};
pub use crate::tls::{TlsConfig, TlsError};

/// How long shutdown waits, after the grace period, for sessions to send their 421.
const FINAL_WAIT: Duration = Duration::from_secs(2);

/// Everything the server needs besides its listener and policy backend.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Hostname and advertised size limit, as shown in replies.
    pub identity: ServerIdentity,
    /// Per-session limits and modes.
    pub session: SessionConfig,
    /// Concurrent connections; the one over it gets `421 4.3.2` as its greeting.
    pub max_connections: usize,
    /// Concurrent connections from one client address (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address); the one over it gets `421 4.7.0` as its greeting, so one
    /// source cannot take every slot. At `max_connections` or more nothing is counted.
    pub max_connections_per_ip: usize,
    /// No command (or no progress writing a reply) for this long: `421 4.4.2`, close.
    pub idle_timeout: Duration,
    /// A command line the client has started must be complete within this long of the
    /// server starting to wait for its rest, or the session ends with `421 4.4.2`: the
    /// idle timeout restarts at every byte, so alone it lets a client hold a connection
    /// forever by sending one byte at a time.
    pub line_timeout: Duration,
    /// The DATA phase starts with this long to run; each octet received adds
    /// `1 / min_data_rate` s, but never more than this long from now. Past it the session
    /// ends with `421 4.4.2` (docs/protocol.md, "Slow clients").
    pub data_timeout: Duration,
    /// Octets per second of message content that keep a DATA phase going (at least 1).
    pub min_data_rate: u64,
    /// Octets of message content that all connections together hold in memory at most,
    /// with a spool. A connection in DATA holds up to two content chunks
    /// ([`SessionConfig::content_chunk`]) while it has a share of this; without one it
    /// writes what each read brings to its spool file at once.
    pub message_memory: usize,
    /// A policy lookup that takes longer is answered `451 4.3.0`.
    pub policy_timeout: Duration,
    /// In harvest-resistant mode (`session.harvest`), how a client address that names too
    /// many unknown mailboxes is delayed: per address, across its sessions, by window
    /// (see [`HarvestLimits`]).
    pub harvest: HarvestLimits,
    /// After shutdown starts, sessions inside a transaction get this long to finish.
    pub shutdown_grace: Duration,
    /// Where accepted messages go.
    pub sink: SinkConfig,
    /// STARTTLS (RFC 3207): offered when set (and required before MAIL/BULK if
    /// [`TlsConfig::required`]); without it STARTTLS is answered `502 5.5.1`. The session's
    /// [`SessionConfig::tls`] is set from this one.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            identity: ServerIdentity::default(),
            session: SessionConfig::default(),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            idle_timeout: Duration::from_secs(300),
            line_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(120),
            min_data_rate: 1024,
            message_memory: 64 * 1024 * 1024,
            policy_timeout: Duration::from_secs(5),
            harvest: HarvestLimits::default(),
            shutdown_grace: Duration::from_secs(10),
            sink: SinkConfig::Discard,
            tls: None,
        }
    }
}

/// Errors that stop the server (a failing connection never does).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen socket could not be created or bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The spool directory could not be prepared.
    #[error("cannot open spool directory {path}")]
    Spool {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Raises this process's soft open-files limit to its hard limit and returns the limit
/// now in force: every connection is a descriptor, and most systems start a process at
/// 1,024. A server, a load generator, and a test with thousands of sessions all need it.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    }
}

/// Binds a listener on `addr` with the given listen backlog. Tokio's own `bind` uses a
/// fixed backlog, which drops connection bursts of a load test; the kernel still caps the
/// value at `net.core.somaxconn`, and when it does, this says so (a warning with both
/// values): connections past a full queue are dropped or answered with SYN cookies, so
/// the backlog in force is worth knowing.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ServerError> {
    let make = || -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    let listener = make().map_err(|source| ServerError::Bind { addr, source })?;
    if let Some(queue) = listen_queue(&listener)
        && queue.limit < backlog
    {
        warn!(
            asked = backlog,
            in_force = queue.limit,
            "listen backlog capped by the kernel (net.core.somaxconn)"
        );
    }
    Ok(listener)
}

/// A listening socket's accept queue as the kernel reports it: what `ss -ltn` shows as
/// Recv-Q and Send-Q.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections established and not accepted yet.
    pub queued: u32,
    /// The backlog in force: the one asked for, capped at `net.core.somaxconn`. The
    /// kernel refuses new connections once more than this many wait (it drops their SYN,
    /// or, when it answered with a SYN cookie, their ACK).
    pub limit: u32,
}

/// The accept queue of `listener` (Linux `TCP_INFO` on a listening socket: `tcpi_unacked`
/// is the queue's length, `tcpi_sacked` its limit); `None` elsewhere, or if it cannot be
/// read or the socket is not listening. Any descriptor of the socket will do.
#[cfg(target_os = "linux")]
pub fn listen_queue(listener: &impl AsFd) -> Option<ListenQueue> {
    // SAFETY: tcp_info is plain data; all zeros is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which outlives the call, on
    // a descriptor `listener` keeps open.
    let status = unsafe {
        libc::getsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    // TCP_LISTEN of the kernel's TCP states (include/net/tcp_states.h); libc has no name
    // for it.
    const TCP_LISTEN: u8 = 10;
    (status == 0 && info.tcpi_state == TCP_LISTEN).then_some(ListenQueue {
        queued: info.tcpi_unacked,
        limit: info.tcpi_sacked,
    })
}

/// Not known off Linux.
#[cfg(not(target_os = "linux"))]
pub fn listen_queue(_listener: &impl AsFd) -> Option<ListenQueue> {
    None
}

/// Server-wide counters, updated as connections end.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
    pub(crate) refused_per_ip: AtomicU64,
    pub(crate) rcpts: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) opted_out: AtomicU64,
    pub(crate) unknown: AtomicU64,
    pub(crate) not_local: AtomicU64,
    pub(crate) tempfail: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) tls_sessions: AtomicU64,
    pub(crate) tls_failed: AtomicU64,
    pub(crate) starttls_discards: AtomicU64,
    pub(crate) largest_accept_turn: AtomicU64,
    pub(crate) accept_queue_peak: AtomicU64,
    pub(crate) accept_queue_full: AtomicU64,
}

/// What a server did, returned by [`run`] when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections served.
    pub connections: u64,
    /// Connections refused over the connection limit.
    pub refused_connections: u64,
    /// Connections refused over the per-address limit.
    pub refused_per_ip: u64,
    /// RCPTs looked up in the policy backend.
    pub rcpts: u64,
    /// ... whose verdict was Accept.
    pub accepted: u64,
    /// ... OptedOut.
    pub opted_out: u64,
    /// ... UnknownMailbox.
    pub unknown: u64,
    /// ... NotLocal.
    pub not_local: u64,
    /// ... answered 451 because the backend failed or timed out.
    pub tempfail: u64,
    /// Messages accepted with 250.
    pub messages: u64,
    /// Sessions that went on under TLS: STARTTLS and its handshake succeeded.
    pub tls_sessions: u64,
    /// STARTTLS answered `220` whose handshake failed or ran out of time (the connection
    /// was closed).
    pub tls_failed: u64,
    /// STARTTLS commands followed, in the same read, by plaintext the client pipelined
    /// after them, which was discarded unexecuted (docs/protocol.md, "STARTTLS").
    pub starttls_discards: u64,
    /// Most connections one turn of the accept loop took (it accepts until the queue is
    /// empty; see `accept_until`).
    pub largest_accept_turn: u64,
    /// Longest accept queue a turn found (the connection that woke it included); 0 where
    /// the queue cannot be read ([`listen_queue`]).
    pub accept_queue_peak: u64,
    /// Turns that found the accept queue over its limit ([`ListenQueue::limit`]): the
    /// kernel was turning connections away then (dropped SYNs, or ACKs of SYN-cookie
    /// handshakes), which the host-wide `TcpExtListenOverflows` counts. A queue can also
    /// overflow between turns unseen: this is a floor.
    pub accept_queue_full: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: get(&self.connections),
            refused_connections: get(&self.refused_connections),
            refused_per_ip: get(&self.refused_per_ip),
            rcpts: get(&self.rcpts),
            accepted: get(&self.accepted),
            opted_out: get(&self.opted_out),
            unknown: get(&self.unknown),
            not_local: get(&self.not_local),
            tempfail: get(&self.tempfail),
            messages: get(&self.messages),
            tls_sessions: get(&self.tls_sessions),
            tls_failed: get(&self.tls_failed),
            starttls_discards: get(&self.starttls_discards),
            largest_accept_turn: get(&self.largest_accept_turn),
            accept_queue_peak: get(&self.accept_queue_peak),
            accept_queue_full: get(&self.accept_queue_full),
        }
    }
}

/// The two steps of a graceful shutdown, fanned out to every connection.
///
/// `draining` fires when the shutdown future completes: the listener is closed, and each
/// session between transactions gets `421 4.3.2` at once. `grace_over` fires
/// `shutdown_grace` later: sessions still inside a transaction get their `421 4.3.2` then.
/// The server returns once every connection task has ended (TaskTracker).
#[derive(Default)]
pub(crate) struct Shutdown {
    pub(crate) draining: CancellationToken,
    pub(crate) grace_over: CancellationToken,
}

/// Connections per client address, while the per-address limit can bind.
struct PerAddress {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when it is dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for a connection from `ip`, or `None` when that address holds its limit.
    fn admit(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = ip.to_canonical();
        let mut counts = table.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.get(&ip).copied().unwrap_or(0);
        if count >= table.limit {
            return None;
        }
        counts.insert(ip, count + 1);
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The octets of message content that connections may hold in memory, all together
/// ([`ServerConfig::message_memory`]), shared out in grants.
#[derive(Debug)]
pub(crate) struct MessageMemory {
    limit: usize,
    used: AtomicUsize,
}

/// A connection's share of [`MessageMemory`], given back when it is dropped.
#[derive(Debug)]
pub(crate) struct MemoryGrant {
    memory: Arc<MessageMemory>,
    octets: usize,
}

impl MessageMemory {
    /// A grant of `octets`, or `None` when the budget has no room for it.
    pub(crate) fn grant(memory: &Arc<MessageMemory>, octets: usize) -> Option<MemoryGrant> {
        memory
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(octets)
                    .filter(|&total| total <= memory.limit)
            })
            .ok()?;
        Some(MemoryGrant {
            memory: memory.clone(),
            octets,
        })
    }
}

impl Drop for MemoryGrant {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.octets, Ordering::AcqRel);
    }
}

/// State shared by all connections of a server.
pub(crate) struct Shared<P> {
    pub(crate) config: ServerConfig,
    pub(crate) policy: Arc<P>,
    pub(crate) spool: Option<Spool>,
    /// Unknown mailboxes per client address, in harvest-resistant mode.
    pub(crate) harvest: Option<harvest::HarvestTable>,
    pub(crate) message_memory: Arc<MessageMemory>,
    pub(crate) stats: Stats,
    pub(crate) shutdown: Shutdown,
    /// Queue ids: the start time in milliseconds shifted left 20 bits, plus a counter, so ids
    /// stay unique across restarts that are a millisecond apart (and the spool refuses to
    /// overwrite in any case).
    pub(crate) next_queue_id: AtomicU64,
}

/// Serves SMTP on `listener` until `shutdown` completes, then shuts down gracefully (see
/// [`ServerConfig::shutdown_grace`]) and returns what the server did: [`Server::new`],
/// then [`Server::run`].
pub async fn run<P: PolicyBackend>(
    listener: TcpListener,
    config: ServerConfig,
    policy: Arc<P>,
    shutdown: impl Future,
) -> Result<StatsSnapshot, ServerError> {
    Server::new(config, policy)?.run(listener, shutdown).await
}

/// A server ready to serve: its sink opened. Made before the listening socket is
/// announced, so that a program that prints a ready line (`bulkbench serve`) reports a
/// bad sink instead of a start.
pub struct Server<P> {
    shared: Arc<Shared<P>>,
}

impl<P: PolicyBackend> Server<P> {
    /// Opens the sink (the spool directory must be usable) and sets up the counters.
    pub fn new(config: ServerConfig, policy: Arc<P>) -> Result<Server<P>, ServerError> {
        let spool = match &config.sink {
            SinkConfig::Discard => None,
            SinkConfig::Spool(path) => {
                Some(Spool::open(path).map_err(|source| ServerError::Spool {
                    path: path.clone(),
                    source,
                })?)
            }
        };
        let mut config = config;
        config.session.keep_message = config.sink.keeps_messages();
        config.session.tls = match &config.tls {
            None => TlsPolicy::Off,
            Some(tls) if tls.required => TlsPolicy::Required,
            Some(_) => TlsPolicy::Offered,
        };
        config.identity.max_message_size = config.session.max_message_size;
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let harvest = config
            .session
            .harvest
            .map(|_| harvest::HarvestTable::new(config.harvest));
        let message_memory = Arc::new(MessageMemory {
            limit: config.message_memory,
            used: AtomicUsize::new(0),
        });
        let shared = Arc::new(Shared {
            policy,
            spool,
            harvest,
            message_memory,
            stats: Stats::default(),
            shutdown: Shutdown::default(),
            next_queue_id: AtomicU64::new(started_ms << 20),
            config,
        });
        Ok(Server { shared })
    }

    /// Serves SMTP on `listener` until `shutdown` completes, then shuts down gracefully
    /// (see [`ServerConfig::shutdown_grace`]) and returns what the server did.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future,
    ) -> Result<StatsSnapshot, ServerError> {
        let shared = self.shared;
        let tasks = TaskTracker::new();
        info!(
            addr = ?listener.local_addr().ok(),
            backend = shared.policy.name(),
            max_connections = shared.config.max_connections,
            max_connections_per_ip = shared.config.max_connections_per_ip,
            backlog = listen_queue(&listener).map(|queue| queue.limit),
            starttls = ?shared.config.session.tls,
            "serving"
        );
        accept_until(&listener, &shared, &tasks, shutdown).await;
        drop(listener);
        drain(&shared, &tasks).await;
        let stats = shared.stats.snapshot();
        info!(?stats, "stopped");
        if stats.accept_queue_full > 0 {
            warn!(
                turns = stats.accept_queue_full,
                peak = stats.accept_queue_peak,
                "the accept queue was found full: connections were turned away by the kernel"
            );
        }
        Ok(stats)
    }
}

/// What the accept loop needs to admit a connection: the connection permits, the
/// per-address counts, the two refusals, and where connection tasks go.
struct Admission<'a, P> {
    shared: &'a Arc<Shared<P>>,
    tasks: &'a TaskTracker,
    /// One permit per connection, taken before the connection task exists: the limit
    /// bounds tasks and buffers, not only sessions.
    permits: Arc<Semaphore>,
    /// Counted only where the per-address limit can bind: below the connection limit.
    per_address: Option<Arc<PerAddress>>,
    over_limit: Vec<u8>,
    over_address_limit: Vec<u8>,
}

impl<'a, P: PolicyBackend> Admission<'a, P> {
    fn new(shared: &'a Arc<Shared<P>>, tasks: &'a TaskTracker) -> Self {
        let config = &shared.config;
        let refusal = |why| {
            let mut text = Vec::new();
            Reply::Closing(why).encode(&config.identity, &mut text);
            text
        };
        Admission {
            shared,
            tasks,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            per_address: (config.max_connections_per_ip < config.max_connections).then(|| {
                Arc::new(PerAddress {
                    limit: config.max_connections_per_ip,
                    counts: Mutex::new(HashMap::new()),
                })
            }),
            over_limit: refusal(Closing::TooManyConnections),
            over_address_limit: refusal(Closing::TooManyFromAddress),
        }
    }

    /// Starts a connection's task, or, over a limit, sends the limit's `421` and closes it.
    fn admit(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let stats = &self.shared.stats;
        let _ = stream.set_nodelay(true);
        let slot = match &self.per_address {
            None => None,
            Some(table) => match PerAddress::admit(table, peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                    refuse(&stream, &self.over_address_limit);
                    return;
                }
            },
        };
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let connection = Connection::new(stream, self.shared.clone());
                self.tasks.spawn(async move {
                    connection.run().await;
                    drop((permit, slot));
                });
            }
            Err(_) => {
                stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                refuse(&stream, &self.over_limit);
            }
        }
    }
}

/// Connections one turn of the accept loop takes at least before it lets the runtime's
/// other tasks run, if the queue has not emptied first; a larger backlog raises it to a
/// full queue's worth.
const ACCEPT_TURN_MIN: usize = 1024;

/// Accepts connections on `listener` until `shutdown` completes, each with a task of its
/// own on `tasks`, or, over a limit, with the limit's `421` and no task.
///
/// Each wake-up is a turn that empties the accept queue: it accepts until the queue is
/// empty (or a full queue's worth was taken) before it yields. Accepting one at a time
/// with tokio's cooperative budget takes 128 at most before the loop waits behind every
/// runnable connection task, while a burst keeps coming: the queue then fills, and the
/// kernel drops SYNs (the client retries 1 s, 3 s, ... later) or, once it answers with SYN
/// cookies, drops the handshake's last ACK, which leaves an SMTP client (it waits for the
/// server to speak first) connected to nothing until its own timeout. Accepting is cheap
/// next to serving: taking a whole queue costs a few microseconds per connection.
async fn accept_until<P: PolicyBackend>(
    listener: &TcpListener,
    shared: &Arc<Shared<P>>,
    tasks: &TaskTracker,
    shutdown: impl Future,
) {
    let admission = Admission::new(shared, tasks);
    let turn_max = listen_queue(listener).map_or(ACCEPT_TURN_MIN, |queue| {
        ACCEPT_TURN_MIN.max(queue.limit as usize)
    });
    tokio::pin!(shutdown);
    // Out of the cooperative budget: a turn ends when the queue is empty, or after
    // `turn_max` connections, not after tokio's 128 operations; the loop yields after
    // each turn.
    tokio::task::coop::unconstrained(async {
        loop {
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match first {
                Ok(accepted) => accepted,
                Err(error) => {
                    backoff(error).await;
                    continue;
                }
            };
            note_queue(listener, shared);
            admission.admit(stream, peer);
            let mut taken = 1;
            while taken < turn_max {
                let next = std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await;
                match next {
                    Poll::Pending => break,
                    Poll::Ready(Ok((stream, peer))) => admission.admit(stream, peer),
                    Poll::Ready(Err(error)) => {
                        backoff(error).await;
                        break;
                    }
                }
                taken += 1;
            }
            shared
                .stats
                .largest_accept_turn
                .fetch_max(taken as u64, Ordering::Relaxed);
            // Yield after every turn: connections arriving about as fast as they are
            // accepted would otherwise keep this task running, and on a runtime of one
            // worker (serve pinned to one CPU) starve every session and timer.
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// After a failed accept: out of file descriptors or memory. Back off instead of
/// spinning; the kernel keeps the backlog meanwhile.
async fn backoff(error: io::Error) {
    error!(%error, "accept failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// At the start of an accept turn (one connection just taken): how many more wait, and
/// whether the queue was at its limit, where the kernel turns connections away. Found
/// full the first time, it is said at once; the count is in the server's stats.
fn note_queue<P>(listener: &TcpListener, shared: &Shared<P>) {
    let Some(queue) = listen_queue(listener) else {
        return;
    };
    let found = u64::from(queue.queued) + 1;
    let stats = &shared.stats;
    stats.accept_queue_peak.fetch_max(found, Ordering::Relaxed);
    if found > u64::from(queue.limit)
        && stats.accept_queue_full.fetch_add(1, Ordering::Relaxed) == 0
    {
        warn!(
            queued = found,
            backlog = queue.limit,
            "accept queue found full: the kernel may be dropping connections (see \
             TcpExtListenOverflows in nstat); a larger --backlog (up to \
             net.core.somaxconn) absorbs larger bursts"
        );
    }
}

/// Sends a connection turned away at accept its `421`, without a task; the caller then
/// drops (closes) it.
fn refuse(stream: &tokio::net::TcpStream, refusal: &[u8]) {
    // The greeting is the first thing on the socket and fits its send buffer, so a
    // non-blocking write either goes out whole or the client is gone.
    if let Err(error) = stream.try_write(refusal) {
        debug!(%error, "could not send the over-limit refusal");
    }
}

/// The graceful shutdown once the listener is closed: sessions between transactions end
/// at once, the others get the grace period, then a last short wait.
async fn drain<P>(shared: &Shared<P>, tasks: &TaskTracker) {
    let open = tasks.len();
    info!(open_connections = open, "shutting down: listener closed");
    shared.shutdown.draining.cancel();
    tasks.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            open_connections = tasks.len(),
            "grace period over; closing the remaining sessions"
        );
        shared.shutdown.grace_over.cancel();
        // A session blocked writing to a client that does not read is bounded by the idle
        // timeout, not by shutdown; do not wait that long.
        // Counted once the wait is over, and said only when true: a session that
        // ended as the wait ran out is not abandoned.
        let waited = tokio::time::timeout(FINAL_WAIT, tasks.wait()).await;
        let busy = tasks.len();
        if waited.is_err() && busy > 0 {
            warn!(
                open_connections = busy,
                "sessions still busy after the grace period (blocked writing to clients \
                 that do not read); abandoning them"
            );
        }
    }
}

/// A policy backend that answers like `inner`, `delay` later: an artificially slower
/// backend, for demonstrating and testing comparisons (`bulkbench serve --lookup-delay-us`).
/// The delay is per batched lookup, as a remote store's round trip would be; a zero delay
/// adds nothing.
pub struct DelayedPolicy<P> {
    /// The backend that decides.
    pub inner: P,
    /// Added to every lookup.
    pub delay: Duration,
}

impl<P: PolicyBackend> PolicyBackend for DelayedPolicy<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn lookup(
        &self,
        batch: &bulk_policy::AddressBatch,
        out: &mut Vec<bulk_policy::Verdict>,
    ) -> Result<(), bulk_policy::PolicyError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.lookup(batch, out).await
    }

    fn reload(&self) -> Result<bulk_policy::Reload, bulk_policy::ReloadError> {
        self.inner.reload()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }
}
