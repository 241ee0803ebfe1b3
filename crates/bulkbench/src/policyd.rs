//! `bulkbench policyd`: a Postfix SMTPD access policy server (`check_policy_service`)
//! answering each RCPT from any backend, with `serve`'s verdicts and reply codes.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bulk_policy::PolicyBackend;
use bulk_postfix::policy::DEFAULT_UNAVAILABLE;
use bulk_postfix::{BulkRule, ClientList, PolicydConfig, SenderList};
use clap::{ArgGroup, Args, ValueEnum};
use tracing::info;

use crate::backend::BackendSpec;
use crate::serve::{BackendUser, StoreOptions};

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("bulk_rule")
        .required(true)
        .multiple(true)
        .args(["bulk", "bulk_senders", "bulk_clients"])
))]
pub struct PolicydArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9998")]
    listen: SocketAddr,
    /// The policy backend and its store, as `serve --backend` takes it: `memory:FILE`,
    /// `fst:PATH`, `lmdb:PATH`, `redis:URL`, `redis-cluster:URL,...`, `postgres:URL`.
    #[arg(long, value_name = "KIND:LOCATION", value_parser = crate::backend::parse_spec)]
    backend: BackendSpec,
    /// Which transactions are bulk: `every` one (preferences apply to all mail).
    #[arg(long, value_enum, value_name = "every",
          conflicts_with_all = ["bulk_senders", "bulk_clients"])]
    bulk: Option<BulkMode>,
    /// Transactions from these senders are bulk: a file of addresses, domains (`shop.example`
    /// or `@shop.example`) and `.parent` domains (their subdomains), one a line, `#`
    /// comments. Other transactions: preferences do not apply (opted out is DUNNO), but
    /// unknown mailboxes and domains not served are still refused.
    #[arg(long, value_name = "FILE")]
    bulk_senders: Option<PathBuf>,
    /// Transactions from these client addresses are bulk: a file of IP addresses and
    /// networks (`192.0.2.0/24`, `2001:db8::/32`), one a line, `#` comments.
    #[arg(long, value_name = "FILE")]
    bulk_clients: Option<PathBuf>,
    /// The action when the store fails or is slower than --policy-timeout-ms, as Postfix's
    /// access(5) reads it (`451 4.3.0 text`, or `DUNNO` to fail open).
    #[arg(long, value_name = "ACTION", default_value = DEFAULT_UNAVAILABLE,
          value_parser = parse_action)]
    unavailable_action: String,
    /// A policy lookup slower than this gets the unavailable action, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    policy_timeout_ms: u64,
    /// Seconds without a request before a connection is closed (Postfix closes its idle
    /// policy connections itself after smtpd_policy_service_max_idle, 300 s).
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Concurrent connections (about one per smtpd process); more are closed as they come.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    #[command(flatten)]
    store: StoreOptions,
}

/// `--bulk` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BulkMode {
    /// Every transaction is bulk.
    Every,
}

fn parse_action(value: &str) -> Result<String, String> {
    bulk_postfix::protocol::check_action(value)
        .map(|()| value.to_owned())
        .map_err(|error| error.to_string())
}

/// Reads a list file with `parse`, its errors naming the file.
fn read_list<T, E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid list {}", path.display()))
}

fn bulk_rule(args: &PolicydArgs) -> anyhow::Result<BulkRule> {
    if args.bulk == Some(BulkMode::Every) {
        return Ok(BulkRule::Every);
    }
    let senders = match &args.bulk_senders {
        Some(path) => read_list(path, SenderList::parse)?,
        None => SenderList::default(),
    };
    let clients = match &args.bulk_clients {
        Some(path) => read_list(path, ClientList::parse)?,
        None => ClientList::default(),
    };
    info!(
        senders = senders.len(),
        clients = clients.len(),
        "bulk transactions: those from listed senders or clients"
    );
    Ok(BulkRule::Listed { senders, clients })
}

pub fn run(args: PolicydArgs) -> anyhow::Result<()> {
    let rule = bulk_rule(&args)?;
    if rule == BulkRule::Every {
        info!("bulk transactions: every one (preferences apply to all mail)");
    }
    let policyd = Policyd {
        listen: args.listen,
        config: PolicydConfig {
            rule,
            unavailable_action: args.unavailable_action,
            policy_timeout: Duration::from_millis(args.policy_timeout_ms),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            max_connections: args.max_connections as usize,
        },
    };
    crate::serve::raise_open_files_limit(args.max_connections + 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    crate::serve::serve_store(&runtime, &args.backend, &args.store, policyd)
}

/// The policy server, run on the backend `serve_store` opens.
struct Policyd {
    listen: SocketAddr,
    config: PolicydConfig,
}

impl BackendUser for Policyd {
    fn run<P: PolicyBackend>(
        self,
        runtime: &tokio::runtime::Runtime,
        policy: P,
    ) -> anyhow::Result<()> {
        runtime.block_on(self.serve(Arc::new(policy)))
    }
}

impl Policyd {
    async fn serve<P: PolicyBackend>(self, policy: Arc<P>) -> anyhow::Result<()> {
        let listener = bulk_server::bind(self.listen, 1024)?;
        let local = listener
            .local_addr()
            .context("cannot read the bound address")?;
        // Every signal handler is in place before the `listening on` line, as in `serve`.
        let shutdown = crate::serve::shutdown_signal()?;
        crate::serve::reload_on_hangup(policy.clone());
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {local}").context("cannot write to standard output")?;
        stdout.flush().context("cannot write to standard output")?;
        drop(stdout);
        let stats =
            bulk_postfix::server::run(listener, self.config, policy.clone(), shutdown).await;
        info!(
            connections = stats.connections,
            refused_connections = stats.refused_connections,
            requests = stats.requests,
            lookups = stats.lookups,
            accepted = stats.accepted,
            opted_out = stats.opted_out,
            unknown = stats.unknown,
            not_local = stats.not_local,
            unavailable = stats.unavailable,
            malformed = stats.malformed,
            "policy server stopped"
        );
        crate::serve::log_backend_counters(&policy.counters());
        Ok(())
    }
}
