//! Policy stores that run as servers of their own (Redis, Redis Cluster, PostgreSQL):
//! connecting to one, writing a population into it, reading and changing one preference,
//! and starting a throwaway one for a run.

use anyhow::Context;
use bulk_policy::{Population, Preference};
use bulk_policy_postgres::{LocalPostgres, PostgresBackend, PostgresSpec};
use bulk_policy_redis::{LocalRedis, LocalRedisCluster, RedisBackend, RedisSpec};
use tracing::info;

use crate::backend::{BackendKind, BackendSpec};
use crate::progress::Steps;

/// Masters of the Redis Cluster a run starts for itself (the fewest a cluster allows).
const LOCAL_CLUSTER_NODES: usize = 3;

/// The store server of a spec, parsed: what its client crate takes.
pub enum RemoteSpec {
    Redis(RedisSpec),
    Postgres(PostgresSpec),
}

impl RemoteSpec {
    /// Parses the location of a remote `spec` (`redis:URL`, `redis-cluster:URL,URL...`,
    /// `postgres:URL`).
    pub fn of(spec: &BackendSpec) -> anyhow::Result<RemoteSpec> {
        let location = spec.location.as_str();
        let parsed = match spec.kind {
            BackendKind::Redis => RedisSpec::parse_single(location).map(RemoteSpec::Redis)?,
            BackendKind::RedisCluster => {
                RedisSpec::parse_cluster(location).map(RemoteSpec::Redis)?
            }
            BackendKind::Postgres => PostgresSpec::parse(location).map(RemoteSpec::Postgres)?,
            kind => anyhow::bail!("{} is not a store server", kind.name()),
        };
        Ok(parsed)
    }
}

/// A backend connected to a store server: what `serve` and `policy` use.
pub enum Remote {
    Redis(RedisBackend),
    Postgres(PostgresBackend),
}

impl Remote {
    /// Connects to the store of `spec`; `connections`: PostgreSQL's pool size (a Redis
    /// connection is multiplexed: one carries every lookup).
    pub async fn connect(spec: &BackendSpec, connections: usize) -> anyhow::Result<Remote> {
        let what = || {
            format!(
                "cannot open the {} store {}",
                spec.kind.name(),
                spec.location
            )
        };
        Ok(match RemoteSpec::of(spec)? {
            RemoteSpec::Redis(target) => {
                Remote::Redis(RedisBackend::connect(&target).await.with_context(what)?)
            }
            RemoteSpec::Postgres(target) => Remote::Postgres(
                PostgresBackend::connect(&target, connections)
                    .await
                    .with_context(what)?,
            ),
        })
    }

    async fn get(&self, address: &str) -> anyhow::Result<Option<Preference>> {
        Ok(match self {
            Remote::Redis(backend) => backend.get(address).await?,
            Remote::Postgres(backend) => backend.get(address).await?,
        })
    }

    async fn set(&self, address: &str, preference: Preference) -> anyhow::Result<()> {
        match self {
            Remote::Redis(backend) => backend.set(address, preference).await?,
            Remote::Postgres(backend) => backend.set(address, preference).await?,
        }
        Ok(())
    }
}

/// A current-thread runtime for the commands that talk to a store once.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Writes `population` into the store server of `spec`, replacing what it held under its
/// prefix or schema, with a progress bar.
pub fn load(spec: &BackendSpec, population: &Population, quiet: bool) -> anyhow::Result<()> {
    let steps = Steps::counting(
        &format!("writing to {}", spec.kind.name()),
        population.mailbox_count() as u64,
        quiet,
    );
    let progress = |done: u64| steps.at(done);
    let runtime = runtime()?;
    let what = || format!("cannot load the population into {}", spec.location);
    let (mailboxes, elapsed) = match RemoteSpec::of(spec)? {
        RemoteSpec::Redis(target) => {
            let stats = runtime
                .block_on(bulk_policy_redis::load(&target, population, progress))
                .with_context(what)?;
            (stats.mailboxes as u64, stats.elapsed)
        }
        RemoteSpec::Postgres(target) => {
            let stats = runtime
                .block_on(bulk_policy_postgres::load(&target, population, progress))
                .with_context(what)?;
            (stats.mailboxes, stats.elapsed)
        }
    };
    steps.finish();
    info!(
        store = spec.kind.name(),
        mailboxes,
        load_ms = elapsed.as_millis() as u64,
        "population written into the store server"
    );
    Ok(())
}

/// The preference of `address` in the store server of `spec`.
pub fn get(spec: &BackendSpec, address: &str) -> anyhow::Result<Option<Preference>> {
    runtime()?.block_on(async { Remote::connect(spec, 1).await?.get(address).await })
}

/// Sets the preference of `address` in the store server of `spec`; the next lookup of
/// every server reading it sees the change (or, behind a cache, within its TTL).
pub fn set(spec: &BackendSpec, address: &str, preference: Preference) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        Remote::connect(spec, 1)
            .await?
            .set(address, preference)
            .await
    })
}

/// A store server started for a run, on a free loopback port, in a private temporary
/// folder; stopped, and its folder removed, when dropped.
pub struct LocalStore {
    // Declared first, dropped first: the server stops before its folder goes.
    server: LocalServer,
    _dir: tempfile::TempDir,
    /// What serves from it: the kind and the URL.
    pub spec: BackendSpec,
}

enum LocalServer {
    Redis(LocalRedis),
    RedisCluster(LocalRedisCluster),
    Postgres(LocalPostgres),
}

impl LocalStore {
    /// Starts a throwaway store server of `kind`: redis-server with persistence off, a
    /// Redis Cluster of three masters, or a PostgreSQL cluster made by initdb (run as the
    /// unprivileged `postgres` user when this process is root).
    pub fn start(kind: BackendKind, quiet: bool) -> anyhow::Result<LocalStore> {
        // A folder of its own, directly under the temporary directory: a PostgreSQL
        // cluster runs as another user, who must be able to reach it.
        let dir = tempfile::Builder::new()
            .prefix(&format!("bulkbench-{}-", kind.name()))
            .tempdir()
            .context("cannot create a temporary folder")?;
        let waiting = Steps::spinner(&format!("starting a local {} server", kind.name()), quiet);
        let started = std::time::Instant::now();
        let what = || format!("cannot start a local {} server", kind.name());
        let (server, location) = match kind {
            BackendKind::Redis => {
                let redis = LocalRedis::start(dir.path()).with_context(what)?;
                let url = redis.url();
                (LocalServer::Redis(redis), url)
            }
            BackendKind::RedisCluster => {
                let cluster =
                    LocalRedisCluster::start(dir.path(), LOCAL_CLUSTER_NODES).with_context(what)?;
                let urls = cluster.urls().join(",");
                (LocalServer::RedisCluster(cluster), urls)
            }
            BackendKind::Postgres => {
                let postgres = LocalPostgres::start(dir.path()).with_context(what)?;
                let url = postgres.url();
                (LocalServer::Postgres(postgres), url)
            }
            kind => anyhow::bail!("{} is not a store server", kind.name()),
        };
        waiting.finish();
        info!(
            store = kind.name(),
            url = %location,
            startup_ms = started.elapsed().as_millis() as u64,
            "local store server started"
        );
        Ok(LocalStore {
            server,
            _dir: dir,
            spec: BackendSpec { kind, location },
        })
    }

    /// The roots of its process trees, whose CPU a run measures: each Redis server, or
    /// the PostgreSQL postmaster (which forks a backend per connection).
    pub fn processes(&self) -> Vec<u32> {
        match &self.server {
            LocalServer::Redis(redis) => vec![redis.pid()],
            LocalServer::RedisCluster(cluster) => cluster.pids(),
            LocalServer::Postgres(postgres) => vec![postgres.pid()],
        }
    }
}
