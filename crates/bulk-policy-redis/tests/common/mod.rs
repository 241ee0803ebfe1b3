//! What the tests share: throwaway servers, and the harness that reports a test ignored
//! where redis-server (or redis-cli) is missing; specs with fresh prefixes; a TCP proxy
//! that counts round trips, delays or stalls traffic.
//!
//! A missing program shows a test as ignored, with the package named, in the test output;
//! with `BULKBENCH_REQUIRE_EXTERNAL=1` (as CI runs) it fails instead. libtest decides what
//! is ignored when it compiles (`#[ignore]`), so the test files that start a server run
//! under libtest-mimic (`harness = false` in Cargo.toml), which lets a test report itself
//! ignored when it runs: each test is an `async fn` returning [`Outcome`], whose server
//! comes from `local_redis(..)?` or `local_cluster(..)?`, listed in the file's `main` by
//! [`trial`].

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bulk_policy_redis::{LocalRedis, LocalRedisCluster, RedisSpec, RedisStoreError};
use libtest_mimic::{Completion, Failed, Trial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A program a test needs that is not installed, and the Debian package that brings it.
#[derive(Debug)]
pub struct Missing {
    program: &'static str,
    package: &'static str,
}

impl Missing {
    /// What the test comes to: a failure where every tool is required
    /// (`BULKBENCH_REQUIRE_EXTERNAL=1`, as CI runs), else ignored, naming the program and
    /// how to install it.
    fn completion(&self) -> Result<Completion, Failed> {
        let Missing { program, package } = self;
        if std::env::var_os("BULKBENCH_REQUIRE_EXTERNAL").is_some_and(|v| v == "1") {
            return Err(format!(
                "{program} is required (BULKBENCH_REQUIRE_EXTERNAL=1) but missing: \
                 apt-get install {package}"
            )
            .into());
        }
        Ok(Completion::ignored_with(format!(
            "needs {program}, which is missing: apt-get install {package}"
        )))
    }
}

/// What a test that starts a server returns: `Err` where a program it needs is missing.
pub type Outcome = Result<(), Missing>;

/// What a test's body may return: `()` (it needs no program) or an [`Outcome`].
pub trait Finished {
    fn completion(self) -> Result<Completion, Failed>;
}

impl Finished for () {
    fn completion(self) -> Result<Completion, Failed> {
        Ok(Completion::Completed)
    }
}

impl Finished for Outcome {
    fn completion(self) -> Result<Completion, Failed> {
        match self {
            Ok(()) => Ok(Completion::Completed),
            Err(missing) => missing.completion(),
        }
    }
}

/// The tokio runtime a trial runs its test on, as `#[tokio::test]` would build it.
#[derive(Clone, Copy)]
pub enum Runtime {
    /// `#[tokio::test]`.
    CurrentThread,
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.
    MultiThread,
}

/// The trial `name`, running `test` on a runtime of its own; ignored (or failed, under
/// `BULKBENCH_REQUIRE_EXTERNAL=1`) where it returns [`Missing`]. A panic fails it.
pub fn trial<F, Fut>(name: &str, runtime: Runtime, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output: Finished>,
{
    Trial::ignorable_test(name, move || {
        let runtime = match runtime {
            Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Runtime::MultiThread => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(2);
                builder
            }
        }
        .enable_all()
        .build()
        .expect("a tokio runtime");
        runtime.block_on(test()).completion()
    })
}

/// `Err(Missing)` if the error is a missing program; panics on any other error.
fn started<T>(result: Result<T, RedisStoreError>) -> Result<T, Missing> {
    match result {
        Ok(value) => Ok(value),
        Err(RedisStoreError::NotInstalled { program, package }) => {
            Err(Missing { program, package })
        }
        Err(e) => panic!("cannot start a throwaway Redis: {e}"),
    }
}

/// A throwaway Redis in `dir`, or [`Missing`] where redis-server is not installed.
pub fn local_redis(dir: &Path) -> Result<LocalRedis, Missing> {
    started(LocalRedis::start(dir))
}

/// A throwaway Redis Cluster of three masters in `dir`, or [`Missing`] where redis-server
/// or redis-cli is not installed.
pub fn local_cluster(dir: &Path) -> Result<LocalRedisCluster, Missing> {
    started(LocalRedisCluster::start(dir, 3))
}

/// Specs for one server or cluster, each with a fresh prefix (`test-0`, `test-1`, ...), so
/// the conformance suite's `make` can stay a plain `Fn`.
pub struct Specs {
    nodes: Vec<String>,
    cluster: bool,
    next: AtomicUsize,
}

impl Specs {
    pub fn single(redis: &LocalRedis) -> Self {
        Specs {
            nodes: vec![redis.url()],
            cluster: false,
            next: AtomicUsize::new(0),
        }
    }

    pub fn cluster(cluster: &LocalRedisCluster) -> Self {
        Specs {
            nodes: cluster.urls(),
            cluster: true,
            next: AtomicUsize::new(0),
        }
    }

    pub fn next(&self) -> RedisSpec {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        RedisSpec {
            nodes: self.nodes.clone(),
            cluster: self.cluster,
            prefix: format!("test-{n}"),
        }
    }
}

/// Runs `future` to completion from synchronous code inside a multi-threaded tokio test
/// (the conformance suite's `make` closure is synchronous).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// A TCP proxy on 127.0.0.1 in front of `127.0.0.1:upstream`, for one client connection
/// at a time or more. It counts turns (a client write after the server spoke, or the
/// first: the round trips the client made), can delay every chunk it forwards, and can
/// stall (forward nothing) until told otherwise or for at most [`MAX_STALL`].
pub struct Proxy {
    pub port: u16,
    turns: Arc<AtomicU64>,
    stall: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// The longest a stall holds a chunk back, so no test can hang on it.
pub const MAX_STALL: Duration = Duration::from_secs(30);

/// Direction of the last chunk forwarded: none yet, client to server, server to client.
const NONE: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Proxy {
    pub async fn start(upstream: u16, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let turns = Arc::new(AtomicU64::new(0));
        let stall = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU8::new(NONE));
        let (t, s) = (turns.clone(), stall.clone());
        let task = tokio::spawn(async move {
            // At most 64 connections over a test's life.
            for _ in 0..64 {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = Pump {
                    turns: t.clone(),
                    stall: s.clone(),
                    last: last.clone(),
                    delay,
                    direction: UP,
                };
                let down = Pump {
                    direction: DOWN,
                    ..up.clone()
                };
                tokio::spawn(up.run(client_read, server_write));
                tokio::spawn(down.run(server_read, client_write));
            }
        });
        Proxy {
            port,
            turns,
            stall,
            task,
        }
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Round trips seen so far.
    pub fn turns(&self) -> u64 {
        self.turns.load(Ordering::SeqCst)
    }

    /// Stops (or resumes) forwarding.
    pub fn set_stall(&self, stall: bool) {
        self.stall.store(stall, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Pump {
    turns: Arc<AtomicU64>,
    stall: Arc<AtomicBool>,
    last: Arc<AtomicU8>,
    delay: Duration,
    direction: u8,
}

impl Pump {
    async fn run(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let stalled_at = Instant::now();
            while self.stall.load(Ordering::SeqCst) && stalled_at.elapsed() < MAX_STALL {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let previous = self.last.swap(self.direction, Ordering::SeqCst);
            if self.direction == UP && previous != UP {
                self.turns.fetch_add(1, Ordering::SeqCst);
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
