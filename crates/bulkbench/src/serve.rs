//! `bulkbench serve`: flags, population loading, and the server's lifetime.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bulk_policy::PolicyBackend;
use bulk_policy::cache::{CacheConfig, CachedBackend};
use bulk_policy::{CannedBackend, MemoryBackend, NormalizeConfig, Reload};
use bulk_population::PreferencesApplyTo;
use bulk_proto::{HarvestConfig, ServerIdentity, SessionConfig};
use bulk_server::{HarvestLimits, ServerConfig, SinkConfig, TlsConfig};

use crate::backend::{BackendKind, BackendSpec, ServeBackend};
use clap::{Args, ValueEnum};
use tracing::{info, warn};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("tls_source").args(["tls", "tls_cert"])))]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:2525")]
    listen: SocketAddr,
    /// Population file: served domains with their regime, mailboxes with their preference
    /// (shorthand for `--backend memory:FILE`).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "backend",
        conflicts_with = "backend"
    )]
    population: Option<PathBuf>,
    /// The policy backend and its store: `memory:FILE` (a population file; SIGHUP reads it
    /// again), `fst:PATH` (an FST built by `bulkbench population --backend fst`; SIGHUP
    /// re-opens it),
    /// `lmdb:PATH` (an LMDB environment; `bulkbench policy set` changes it while serving),
    /// or a store server filled by `bulkbench population --backend KIND -o URL`, changed
    /// by `policy set` while serving: `redis:redis://HOST:PORT[/DB][?prefix=P]`,
    /// `redis-cluster:redis://HOST:PORT,redis://HOST:PORT,...[?prefix=P]`,
    /// `postgres:postgresql://USER@HOST:PORT/DB[?schema=S]`.
    /// Or `canned[:SHARE]`: no store and no lookup, every RCPT accepted or refused (550
    /// 5.7.1) by a fixed rule accepting SHARE of them (default 1), whatever its address:
    /// this machine's ceiling for `bench --ceiling`.
    #[arg(long, value_name = "KIND:PATH", value_parser = crate::backend::parse_serve_backend)]
    backend: Option<ServeBackend>,
    /// Name in the greeting and EHLO reply [default: this machine's hostname].
    #[arg(long, value_name = "H")]
    hostname: Option<String>,
    /// RCPT commands per transaction; further ones get 452 4.5.3.
    #[arg(long, value_name = "N", default_value_t = bulk_proto::limits::DEFAULT_MAX_RECIPIENTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_recipients: u32,
    /// Largest message in octets (advertised as SIZE).
    #[arg(long, value_name = "BYTES", default_value_t = bulk_proto::limits::DEFAULT_MAX_MESSAGE_SIZE,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_message_size: u64,
    /// Seconds without a command before 421 4.4.2.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Concurrent connections; one more gets 421 4.3.2 as its greeting.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Concurrent connections from one client address; one more gets 421 4.7.0 as its
    /// greeting [default: a tenth of --max-connections, rounded up].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_ip: Option<u64>,
    /// Seconds a started command line has to be completed before 421 4.4.2.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    line_timeout: u64,
    /// Seconds a DATA phase starts with; each octet received adds 1/--min-data-rate s, up
    /// to this many seconds from now. Past it: 421 4.4.2.
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    data_timeout: u64,
    /// Octets per second of message content that keep a DATA phase going.
    #[arg(long, value_name = "BYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    min_data_rate: u64,
    /// With a spool: octets of message content all connections together hold in memory
    /// (two 64 KiB chunks per connection in DATA; past it, content goes to disk per read).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    message_memory: u64,
    /// Protocol errors per session before 421 4.7.0.
    #[arg(long, value_name = "N", default_value_t = bulk_proto::limits::DEFAULT_MAX_ERRORS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_errors: u32,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    backlog: u32,
    /// Where accepted messages go: `discard` (count only) or `spool:DIR` (durable files).
    #[arg(long, value_name = "discard|spool:DIR", default_value = "discard", value_parser = parse_sink)]
    sink: SinkConfig,
    /// Answer unknown and opted-out mailboxes alike, and delay a client address's RCPTs
    /// for a window after a window in which it named too many unknown mailboxes.
    #[arg(long)]
    harvest_resistant: bool,
    /// Harvest-resistant mode: unknown mailboxes a client address may name per window
    /// (across its sessions) before every RCPT it sends in the next window is delayed.
    #[arg(long, value_name = "N", default_value_t = 100)]
    harvest_threshold: u32,
    /// Harvest-resistant mode: the window's length in seconds. A client learns at most one
    /// bit (one address told apart) per window and address: 3600 / SECS per hour.
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    harvest_window_secs: u64,
    /// Which transactions recipients' preferences apply to: `bulk` (BULK transactions; under
    /// MAIL an opted-out mailbox still receives ordinary mail) or `all` (MAIL too: a site
    /// that treats all its incoming mail as bulk, as `policyd --bulk every` does).
    #[arg(long, value_name = "bulk|all", default_value = "bulk")]
    preferences_apply_to: PreferencesApplyTo,
    /// Harvest-resistant mode: the delay per RCPT of a delayed client, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    harvest_delay_ms: u64,
    /// A policy lookup slower than this is answered 451 4.3.0, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    policy_timeout_ms: u64,
    /// Seconds sessions inside a transaction get to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    shutdown_grace: u64,
    /// Delay every policy lookup by this many microseconds: an artificially slower backend,
    /// for demonstrating and testing `bulkbench compare`. 0: off.
    #[arg(long, value_name = "US", default_value_t = 0)]
    lookup_delay_us: u64,
    /// Put a read-through cache of N entries (one per distinct RCPT address, as written) in
    /// front of the backend, for stores across the network. A change made in the store is
    /// then seen within --cache-ttl-ms, not at the next lookup. The server logs the cache's
    /// hits and misses when it stops.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    cache_entries: Option<u64>,
    /// With --cache-entries: how long a cached verdict is served, in milliseconds: the
    /// most stale a reply can be.
    #[arg(long, value_name = "MS", default_value_t = 1000, requires = "cache_entries",
          value_parser = clap::value_parser!(u64).range(1..))]
    cache_ttl_ms: u64,
    /// Offer STARTTLS with a throwaway certificate made at start: `self-signed`, for
    /// localhost, 127.0.0.1, ::1 and --hostname. No client can verify it: for tests and
    /// trials (clients must be told not to check).
    #[arg(
        long,
        value_name = "self-signed",
        value_enum,
        conflicts_with = "tls_key"
    )]
    tls: Option<TlsMode>,
    /// Offer STARTTLS with this certificate chain (PEM: the server's certificate first,
    /// then intermediates).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse MAIL and BULK before STARTTLS (530 5.7.0). Needs --tls or --tls-cert.
    #[arg(long, requires = "tls_source")]
    require_tls: bool,
    #[command(flatten)]
    store: StoreOptions,
}

/// Where the certificate of `serve --tls` comes from.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TlsMode {
    /// Generated at start, for this run only.
    SelfSigned,
}

/// How the chosen backend is served: the layers around it, the socket, the server.
struct Serving {
    /// `--lookup-delay-us` (zero: none).
    delay: Duration,
    cache: Option<CacheConfig>,
    listen: SocketAddr,
    backlog: u32,
    config: ServerConfig,
}

/// How a backend's store is opened and its addresses normalized: the flags `serve` and
/// `policyd` share.
#[derive(Debug, Args)]
pub(crate) struct StoreOptions {
    /// With an fst backend: map the file instead of reading it into memory (at start and
    /// on SIGHUP). Saves memory (the pages are the page cache's, shared) and startup; but a
    /// file truncated in place while served kills the server with SIGBUS, and one rewritten
    /// in place feeds lookups changing bytes: replace files by rename, as `bulkbench
    /// population` does.
    #[arg(long)]
    pub(crate) fst_mmap: bool,
    /// Keep the case of local parts when looking up recipients (domains are always folded).
    #[arg(long)]
    pub(crate) case_sensitive_local_part: bool,
    /// Subaddress delimiter stripped before lookup (`ann+news` is `ann`); `none` to keep
    /// local parts whole.
    #[arg(long, value_name = "CHAR|none", default_value = "+", value_parser = parse_delimiter)]
    pub(crate) recipient_delimiter: Delimiter,
    /// Connections to a PostgreSQL store (its pool; a lookup holds one for its query).
    /// Redis needs one, multiplexed.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) store_connections: u64,
}

impl StoreOptions {
    /// How lookups normalize addresses (a population file's; the stores keep their own).
    pub(crate) fn normalize(&self) -> NormalizeConfig {
        NormalizeConfig {
            fold_local_case: !self.case_sensitive_local_part,
            recipient_delimiter: self.recipient_delimiter.0,
        }
    }

    /// How an fst store is loaded.
    fn fst_load(&self) -> bulk_policy_fst::FstLoad {
        match self.fst_mmap {
            true => bulk_policy_fst::FstLoad::Map,
            false => bulk_policy_fst::FstLoad::Read,
        }
    }
}

/// A recipient delimiter flag value: one ASCII character, or none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delimiter(pub(crate) Option<u8>);

pub(crate) fn parse_delimiter(value: &str) -> Result<Delimiter, String> {
    match value.as_bytes() {
        b"none" => Ok(Delimiter(None)),
        [byte] if byte.is_ascii_graphic() && *byte != b'@' && *byte != b'"' => {
            Ok(Delimiter(Some(*byte)))
        }
        _ => Err("expected one printable ASCII character other than @ and \", or `none`".into()),
    }
}

fn parse_sink(value: &str) -> Result<SinkConfig, String> {
    if value == "discard" {
        return Ok(SinkConfig::Discard);
    }
    match value.strip_prefix("spool:") {
        Some("") => Err("spool: needs a directory, as in spool:/var/spool/bulkbench".into()),
        Some(dir) => Ok(SinkConfig::Spool(PathBuf::from(dir))),
        None => Err("expected `discard` or `spool:DIR`".into()),
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Raises the open-files limit, warning when it stays below what the server may need.
pub(crate) fn raise_open_files_limit(wanted: u64) {
    let limit = crate::sys::raise_open_files_limit();
    if limit < wanted {
        warn!(
            open_files_limit = limit,
            wanted,
            "the open-files limit is below --max-connections; connections beyond it will fail to be accepted"
        );
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(hostname) = &args.hostname
        && (hostname.is_empty() || !hostname.bytes().all(|b| b.is_ascii_graphic()))
    {
        bail!("--hostname must be non-empty printable ASCII without spaces");
    }
    let spec = match (&args.backend, &args.population) {
        (Some(spec), _) => spec.clone(),
        (None, Some(file)) => ServeBackend::Store(BackendSpec {
            kind: BackendKind::Memory,
            location: file.display().to_string(),
        }),
        (None, None) => bail!("give --population FILE or --backend KIND:PATH"),
    };
    let hostname = args.hostname.clone().unwrap_or_else(system_hostname);
    let tls = tls_config(&args, &hostname)?;
    let config = ServerConfig {
        identity: ServerIdentity {
            hostname,
            max_message_size: args.max_message_size,
        },
        session: SessionConfig {
            max_recipients: args.max_recipients,
            max_message_size: args.max_message_size,
            max_errors: args.max_errors,
            harvest: args.harvest_resistant.then_some(HarvestConfig {}),
            preferences_for_mail: args.preferences_apply_to == PreferencesApplyTo::All,
            ..SessionConfig::default()
        },
        max_connections: args.max_connections as usize,
        max_connections_per_ip: args
            .max_connections_per_ip
            .unwrap_or(args.max_connections.div_ceil(10)) as usize,
        idle_timeout: Duration::from_secs(args.idle_timeout),
        line_timeout: Duration::from_secs(args.line_timeout),
        data_timeout: Duration::from_secs(args.data_timeout),
        min_data_rate: args.min_data_rate,
        message_memory: usize::try_from(args.message_memory).unwrap_or(usize::MAX),
        policy_timeout: Duration::from_millis(args.policy_timeout_ms),
        harvest: HarvestLimits {
            window: Duration::from_secs(args.harvest_window_secs),
            unknown_threshold: args.harvest_threshold,
            delay: Duration::from_millis(args.harvest_delay_ms),
            ..HarvestLimits::default()
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        sink: args.sink.clone(),
        tls,
    };
    raise_open_files_limit(args.max_connections + 64);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let serving = Serving {
        delay: Duration::from_micros(args.lookup_delay_us),
        cache: args.cache_entries.map(|entries| CacheConfig {
            entries,
            ttl: Duration::from_millis(args.cache_ttl_ms),
        }),
        listen: args.listen,
        backlog: args.backlog,
        config,
    };
    let spec = match spec {
        ServeBackend::Store(spec) => spec,
        ServeBackend::Canned(share) => {
            info!(
                accept_share = %share,
                "canned backend: every RCPT answered by its rule, no lookup, no population"
            );
            return serve_with(&runtime, CannedBackend::new(share), serving);
        }
    };
    serve_store(&runtime, &spec, &args.store, serving)
}

/// The STARTTLS configuration the TLS flags ask for, `None` without them. Files are read
/// (and a certificate made) here, before the `listening on` line: a bad file is an error
/// at start, not at the first STARTTLS.
fn tls_config(args: &ServeArgs, hostname: &str) -> anyhow::Result<Option<TlsConfig>> {
    let server = match (args.tls, &args.tls_cert, &args.tls_key) {
        (Some(TlsMode::SelfSigned), _, _) => {
            let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                .map(str::to_owned)
                .to_vec();
            if !names.iter().any(|name| name == hostname) {
                names.push(hostname.to_owned());
            }
            let made = bulk_server::tls::self_signed(&names)
                .context("cannot make the certificate of --tls self-signed")?;
            info!(
                names = %names.join(","),
                "STARTTLS with a self-signed certificate made for this run (clients cannot verify it)"
            );
            made.server
        }
        (None, Some(cert), Some(key)) => bulk_server::tls::from_pem_files(cert, key)
            .context("cannot use --tls-cert and --tls-key")?,
        // clap makes --require-tls need a TLS source, and --tls-cert and --tls-key each other.
        _ => return Ok(None),
    };
    Ok(Some(TlsConfig {
        server,
        required: args.require_tls,
    }))
}

/// What runs on an opened backend: `serve`'s SMTP server, `policyd`'s policy server.
pub(crate) trait BackendUser {
    /// Runs on `policy` until the server stops.
    fn run<P: PolicyBackend>(
        self,
        runtime: &tokio::runtime::Runtime,
        policy: P,
    ) -> anyhow::Result<()>;
}

/// Opens the store of `spec` and serves from it: `serving` runs on the opened backend.
pub(crate) fn serve_store(
    runtime: &tokio::runtime::Runtime,
    spec: &BackendSpec,
    options: &StoreOptions,
    serving: impl BackendUser,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (normalize, fst_load) = (options.normalize(), options.fst_load());
    let store_connections = options.store_connections as usize;
    match spec.kind {
        BackendKind::Memory => {
            let policy = MemoryBackend::load(spec.path(), normalize).map_err(|error| {
                // An I/O error names the file already; a content error names only its line.
                let io = matches!(error, bulk_policy::PopulationError::Io { .. });
                let error = anyhow::Error::new(error);
                if io {
                    error
                } else {
                    error.context(format!("invalid population file {}", spec.path().display()))
                }
            })?;
            info!(
                domains = policy.domain_count(),
                mailboxes = policy.len(),
                load_ms = started.elapsed().as_millis() as u64,
                "population loaded into the memory backend"
            );
            serve_with(runtime, policy, serving)
        }
        BackendKind::Fst => {
            let policy = bulk_policy_fst::FstBackend::open_with(spec.path(), fst_load)
                .with_context(|| format!("cannot open the fst store {}", spec.path().display()))?;
            info!(
                mailboxes = policy.len(),
                bytes = policy.file_bytes(),
                load_ms = started.elapsed().as_millis() as u64,
                "fst store {}",
                match fst_load {
                    bulk_policy_fst::FstLoad::Read => "read into memory",
                    bulk_policy_fst::FstLoad::Map => "mapped",
                }
            );
            serve_with(runtime, policy, serving)
        }
        BackendKind::Lmdb => {
            let policy = bulk_policy_lmdb::LmdbBackend::open(spec.path())
                .with_context(|| format!("cannot open the lmdb store {}", spec.path().display()))?;
            let mailboxes = policy
                .len()
                .with_context(|| format!("cannot read the lmdb store {}", spec.path().display()))?;
            info!(
                mailboxes,
                load_ms = started.elapsed().as_millis() as u64,
                "lmdb store opened"
            );
            serve_with(runtime, policy, serving)
        }
        BackendKind::Redis | BackendKind::RedisCluster | BackendKind::Postgres => {
            let remote =
                runtime.block_on(crate::store::Remote::connect(spec, store_connections))?;
            info!(
                store = spec.kind.name(),
                connect_ms = started.elapsed().as_millis() as u64,
                "store server connected"
            );
            match remote {
                crate::store::Remote::Redis(policy) => serve_with(runtime, policy, serving),
                crate::store::Remote::Postgres(policy) => serve_with(runtime, policy, serving),
            }
        }
    }
}

/// Runs `serving` (`serve`'s server, `policyd`'s) on the opened backend `policy`.
fn serve_with<P: PolicyBackend>(
    runtime: &tokio::runtime::Runtime,
    policy: P,
    serving: impl BackendUser,
) -> anyhow::Result<()> {
    serving.run(runtime, policy)
}

impl BackendUser for Serving {
    /// Binds, prints the `listening on` line, and serves with `policy` (behind the cache
    /// and the delay, when asked) until SIGTERM/SIGINT; SIGHUP asks the backend to reload
    /// its store.
    fn run<P: PolicyBackend>(
        self,
        runtime: &tokio::runtime::Runtime,
        policy: P,
    ) -> anyhow::Result<()> {
        // One server type per backend, whatever the layers: each is a no-op when off.
        let policy = bulk_server::DelayedPolicy {
            inner: CachedBackend::new(policy, self.cache),
            delay: self.delay,
        };
        runtime.block_on(serve_async(Arc::new(policy), self))
    }
}

async fn serve_async<P: PolicyBackend>(policy: Arc<P>, serving: Serving) -> anyhow::Result<()> {
    let Serving {
        listen,
        backlog,
        config,
        ..
    } = serving;
    // Everything that can fail is checked before the `listening on` line: a supervisor
    // that waits for it must never be told of a start that is about to fail.
    let server = bulk_server::Server::new(config, policy.clone())?;
    let listener = bulk_server::bind(listen, backlog)?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Every signal handler is in place before the `listening on` line: a supervisor may
    // send SIGHUP or SIGTERM the moment it reads it.
    let shutdown = shutdown_signal()?;
    reload_on_hangup(policy.clone());
    // Exactly one line on standard output, once ready: scripts and `bulkbench bench`
    // wait for it to learn the port.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {local}").context("cannot write to standard output")?;
    stdout.flush().context("cannot write to standard output")?;
    drop(stdout);
    let counters = policy.clone();
    let stats = server.run(listener, shutdown).await?;
    info!(
        connections = stats.connections,
        rcpts = stats.rcpts,
        messages = stats.messages,
        tls_sessions = stats.tls_sessions,
        tls_handshakes_failed = stats.tls_failed,
        starttls_pipelined_discarded = stats.starttls_discards,
        "server stopped"
    );
    log_backend_counters(&counters.counters());
    Ok(())
}

/// Reloads the backend's store on every SIGHUP. The handler is registered when this
/// returns (call it from within the runtime).
pub(crate) fn reload_on_hangup<P: PolicyBackend>(reloader: Arc<P>) {
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hangup) = hangup else {
            warn!("cannot listen for SIGHUP; the store will not be reloaded");
            return;
        };
        while hangup.recv().await.is_some() {
            // A reload reads and builds a whole store (about 1 s for a population file of
            // 1M mailboxes): on a blocking thread, not on a worker that serves sessions.
            let (policy, started) = (reloader.clone(), Instant::now());
            let reloaded = tokio::task::spawn_blocking(move || policy.reload()).await;
            let (backend, reload_ms) = (reloader.name(), started.elapsed().as_millis() as u64);
            match reloaded {
                Ok(Ok(Reload::Swapped)) => info!(backend, reload_ms, "SIGHUP: store reloaded"),
                Ok(Ok(Reload::InPlace)) => info!(
                    backend,
                    "SIGHUP: nothing to reload: changes to the store are seen at once"
                ),
                Ok(Ok(Reload::Unsupported)) => {
                    warn!(
                        backend,
                        "SIGHUP: this backend has no store to reload; nothing changed"
                    )
                }
                Ok(Err(error)) => warn!(%error, "SIGHUP: reload failed; the previous store stays"),
                Err(error) => warn!(%error, "SIGHUP: reload failed; the previous store stays"),
            }
        }
    });
}

/// The backend's counters at the end, with the cache's hit rate when there is a cache.
pub(crate) fn log_backend_counters(counters: &[(&'static str, u64)]) {
    if counters.is_empty() {
        return;
    }
    let text: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let count = |name: &str| counters.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    match (count("cache_hits"), count("cache_misses")) {
        (Some(hits), Some(misses)) if hits + misses > 0 => info!(
            counters = %text.join(" "),
            cache_hit_rate = format!("{:.4}", hits as f64 / (hits + misses) as f64),
            "policy backend counters"
        ),
        _ => info!(counters = %text.join(" "), "policy backend counters"),
    }
}

/// Completes on SIGTERM or SIGINT. Both handlers are registered when this returns, so a
/// signal sent from then on is never the default action (death without a drain).
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}
