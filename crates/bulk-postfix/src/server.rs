//! The policy server on tokio: one task per Postfix connection, each reading requests with
//! the sans-io [`Decoder`], judging them ([`policy`](crate::policy)) and looking
//! recipients up, one at a time, in any [`PolicyBackend`].
//!
//! A policy connection carries one request at a time (Postfix waits for each answer), so
//! each lookup is a batch of one. A malformed request is logged and closes its connection;
//! Postfix then retries on a new one, and the other connections are not affected.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bulk_policy::{AddressBatch, PolicyBackend, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::bulk::BulkRule;
use crate::policy::{Judgement, action, judge};
use crate::protocol::{Decoder, Request, encode_response};

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 8 * 1024;
/// How long connections get, after the shutdown, to finish the request they are answering,
/// beyond the policy timeout that bounds its lookup.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

/// How the policy server answers.
#[derive(Clone, Debug)]
pub struct PolicydConfig {
    /// Which transactions are bulk.
    pub rule: BulkRule,
    /// The action when the store fails or is slower than `policy_timeout`
    /// ([`DEFAULT_UNAVAILABLE`](crate::policy::DEFAULT_UNAVAILABLE) unless configured;
    /// checked with [`check_action`](crate::protocol::check_action)).
    pub unavailable_action: String,
    /// A lookup slower than this is answered `unavailable_action`.
    pub policy_timeout: Duration,
    /// A connection with no request for this long is closed (Postfix closes its own idle
    /// policy connections after `smtpd_policy_service_max_idle`, 300 s by default).
    pub idle_timeout: Duration,
    /// Connections at once; more are closed as they come.
    pub max_connections: usize,
}

/// What a policy server did, returned by [`run`] when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicydStats {
    /// Connections served.
    pub connections: u64,
    /// Connections closed at once, over the connection limit.
    pub refused_connections: u64,
    /// Requests answered.
    pub requests: u64,
    /// Recipients looked up.
    pub lookups: u64,
    /// ... whose verdict was Accept.
    pub accepted: u64,
    /// ... OptedOut (refused in bulk transactions only).
    pub opted_out: u64,
    /// ... UnknownMailbox.
    pub unknown: u64,
    /// ... NotLocal.
    pub not_local: u64,
    /// Lookups answered with the unavailable action: the store failed or was too slow.
    pub unavailable: u64,
    /// Connections closed on a malformed request.
    pub malformed: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused_connections: AtomicU64,
    requests: AtomicU64,
    lookups: AtomicU64,
    verdicts: [AtomicU64; 4],
    unavailable: AtomicU64,
    malformed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PolicydStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PolicydStats {
            connections: get(&self.connections),
            refused_connections: get(&self.refused_connections),
            requests: get(&self.requests),
            lookups: get(&self.lookups),
            accepted: get(&self.verdicts[0]),
            opted_out: get(&self.verdicts[1]),
            unknown: get(&self.verdicts[2]),
            not_local: get(&self.verdicts[3]),
            unavailable: get(&self.unavailable),
            malformed: get(&self.malformed),
        }
    }
}

fn verdict_index(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Accept => 0,
        Verdict::OptedOut => 1,
        Verdict::UnknownMailbox => 2,
        Verdict::NotLocal => 3,
    }
}

struct Shared<P> {
    config: PolicydConfig,
    policy: Arc<P>,
    counters: Counters,
}

/// Serves the policy protocol on `listener` until `shutdown` completes; then stops
/// accepting, lets each connection finish the request it is answering (closing idle
/// ones at once), and returns what it did.
pub async fn run<P: PolicyBackend>(
    listener: TcpListener,
    config: PolicydConfig,
    policy: Arc<P>,
    shutdown: impl Future,
) -> PolicydStats {
    let grace = config.policy_timeout + SHUTDOWN_SLACK;
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let shared = Arc::new(Shared {
        config,
        policy,
        counters: Counters::default(),
    });
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    info!(
        addr = ?listener.local_addr().ok(),
        backend = shared.policy.name(),
        max_connections = shared.config.max_connections,
        "policy server serving"
    );
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or memory: back off instead of spinning; the
                // kernel keeps the backlog meanwhile.
                error!(%error, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            Counters::add(&shared.counters.refused_connections);
            warn!(client = %peer, "over the connection limit: connection closed");
            continue;
        };
        Counters::add(&shared.counters.connections);
        let _ = stream.set_nodelay(true);
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            serve_connection(stream, peer, &shared, &stop).await;
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!(
            connections = tasks.len(),
            "connections still answering after the shutdown grace: abandoned"
        );
    }
    shared.counters.snapshot()
}

/// One connection: requests answered in order until the client closes, a request is
/// malformed, the idle timeout passes, or the server stops.
async fn serve_connection<P: PolicyBackend>(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared<P>,
    stop: &CancellationToken,
) {
    let idle = shared.config.idle_timeout;
    let mut decoder = Decoder::new();
    let mut chunk = vec![0; READ_CHUNK];
    let mut out = Vec::new();
    let mut batch = AddressBatch::new();
    let mut verdicts = Vec::with_capacity(1);
    loop {
        loop {
            let request = match decoder.next_request() {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(error) => {
                    Counters::add(&shared.counters.malformed);
                    warn!(client = %peer, %error, "malformed policy request: connection closed");
                    return;
                }
            };
            let action = answer(request, shared, &mut batch, &mut verdicts).await;
            encode_response(action, &mut out);
        }
        if !out.is_empty() {
            match tokio::time::timeout(idle, stream.write_all(&out)).await {
                Ok(Ok(())) => out.clear(),
                Ok(Err(error)) => {
                    debug!(client = %peer, %error, "write failed: connection closed");
                    return;
                }
                Err(_) => {
                    debug!(client = %peer, "write stalled past the idle timeout: connection closed");
                    return;
                }
            }
        }
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = tokio::time::timeout(idle, stream.read(&mut chunk)) => read,
        };
        match read {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => decoder.feed(&chunk[..n]),
            Ok(Err(error)) => {
                debug!(client = %peer, %error, "read failed: connection closed");
                return;
            }
            Err(_) => {
                debug!(client = %peer, "idle timeout: connection closed");
                return;
            }
        }
    }
}

/// The action for one request: judged, and its recipient looked up when it must be.
async fn answer<'s, P: PolicyBackend>(
    request: Request<'_>,
    shared: &'s Shared<P>,
    batch: &mut AddressBatch,
    verdicts: &mut Vec<Verdict>,
) -> &'s str {
    Counters::add(&shared.counters.requests);
    let (recipient, bulk) = match judge(&request, &shared.config.rule) {
        Judgement::Answer(action) => {
            let state = request.get("protocol_state").unwrap_or_default();
            debug!(state, action, "answered without a lookup");
            return action;
        }
        Judgement::Lookup { recipient, bulk } => (recipient, bulk),
    };
    Counters::add(&shared.counters.lookups);
    batch.clear();
    batch.push(recipient.as_bytes());
    verdicts.clear();
    let looked_up = tokio::time::timeout(
        shared.config.policy_timeout,
        shared.policy.lookup(batch, verdicts),
    )
    .await;
    let unavailable = shared.config.unavailable_action.as_str();
    match looked_up {
        Ok(Ok(())) if verdicts.len() == 1 => {
            let verdict = verdicts[0];
            Counters::add(&shared.counters.verdicts[verdict_index(verdict)]);
            let action = action(verdict, bulk);
            debug!(recipient, bulk, ?verdict, action, "looked up");
            action
        }
        Ok(Ok(())) => {
            Counters::add(&shared.counters.unavailable);
            warn!(
                recipient,
                verdicts = verdicts.len(),
                "the policy backend answered the wrong number of verdicts"
            );
            unavailable
        }
        Ok(Err(error)) => {
            Counters::add(&shared.counters.unavailable);
            warn!(recipient, %error, action = unavailable, "policy lookup failed");
            unavailable
        }
        Err(_) => {
            Counters::add(&shared.counters.unavailable);
            warn!(
                recipient,
                timeout_ms = shared.config.policy_timeout.as_millis() as u64,
                action = unavailable,
                "policy lookup timed out"
            );
            unavailable
        }
    }
}
