//! `bench` and `compare` run the workload against a `bulkbench serve` of their own: a
//! child process on a free loopback port, its store built from the scenario's population.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bulk_loadgen::{CpuSet, RunResult};
use bulk_report::Summary;
use bulk_report::summary::Target;
use tracing::{info, warn};

use super::cpu::{CpuSplit, Watched, cpu_delta, pinned_times};
use super::outcome::{summarize, summary_input};
use super::prepare::max_in_flight;
use super::{Prepared, RunArgs, ServerStore, Stores, drive, load_config};
use crate::backend::{BackendKind, BackendSpec, ServeBackend, build_store, parse_spec};
use crate::store::LocalStore;
use crate::sys;

/// What the server [`run_with_server`] starts serves by.
pub(super) enum Served<'a> {
    /// This backend, on a store built from the scenario's population.
    Store(&'a str),
    /// The canned rule: no store.
    Canned(bulk_policy::AcceptShare),
}

/// The store a served run's server reads, ready: built (or reused from `stores`), and
/// for a store that runs as processes of its own, started.
struct ReadyStore {
    /// What `serve --backend` gets.
    serve: ServeBackend,
    /// The backend as the report names it.
    label: String,
    /// Roots of the store's own processes, whose CPU the run measures (none for a store
    /// inside the server, or a store server the run did not start).
    processes: Vec<u32>,
    /// The store's kind, for its cost in the report.
    kind: String,
    /// A store server started for this run alone (not kept in `stores`): it stops when
    /// this is dropped, after the run.
    _local: Option<LocalStore>,
}

/// The backend an arm names: a kind (its store built from the scenario: a file, or a
/// store server started for the run), or `KIND:URL`, a store server already running, into
/// which the scenario's population is written.
fn ready_store(
    served: Served<'_>,
    prepared: &Prepared,
    work: &Path,
    stores: Option<&Stores>,
    quiet: bool,
) -> anyhow::Result<ReadyStore> {
    let backend = match served {
        Served::Canned(share) => {
            return Ok(ReadyStore {
                serve: ServeBackend::Canned(share),
                label: format!("canned:{share}"),
                processes: Vec::new(),
                kind: "canned".into(),
                _local: None,
            });
        }
        Served::Store(backend) => backend,
    };
    let (kind, given) = match backend.split_once(':') {
        Some(_) => {
            let spec = parse_spec(backend).map_err(|error| anyhow::anyhow!("{error}"))?;
            if !spec.kind.is_remote() {
                bail!(
                    "{backend}: a {} store is built from the scenario; give the kind alone",
                    spec.kind.name()
                );
            }
            (spec.kind, Some(spec))
        }
        None => (
            BackendKind::from_name(backend).with_context(|| {
                format!(
                    "unknown backend {backend:?}; known: {}",
                    BackendKind::names()
                )
            })?,
            None,
        ),
    };
    let mut ready = ReadyStore {
        serve: ServeBackend::Canned(bulk_policy::AcceptShare::ALL),
        // The kind, not a URL (which may hold a password) in the report.
        label: kind.name().to_owned(),
        processes: Vec::new(),
        kind: kind.name().to_owned(),
        _local: None,
    };
    if !kind.is_remote() {
        // A comparison builds each backend's store once and reuses it for every repeat.
        let dir = stores.map_or(work, Stores::path);
        let store = BackendSpec::file(kind, &dir.join(format!("population.{}", kind.name())));
        if stores.is_none() || !store.path().exists() {
            build_store(&store, &prepared.model, quiet)?;
        }
        ready.serve = ServeBackend::Store(store);
        return Ok(ready);
    }
    if let Some(stores) = stores {
        let mut servers = stores.servers.borrow_mut();
        if let Some((_, kept)) = servers.iter().find(|(label, _)| label == backend) {
            ready.serve = ServeBackend::Store(kept.spec.clone());
            ready.processes = kept
                .local
                .as_ref()
                .map_or(Vec::new(), LocalStore::processes);
            return Ok(ready);
        }
        let (spec, local) = start_and_load(kind, given, prepared, quiet)?;
        ready.serve = ServeBackend::Store(spec.clone());
        ready.processes = local.as_ref().map_or(Vec::new(), LocalStore::processes);
        servers.push((backend.to_owned(), ServerStore { spec, local }));
        return Ok(ready);
    }
    let (spec, local) = start_and_load(kind, given, prepared, quiet)?;
    ready.serve = ServeBackend::Store(spec);
    ready.processes = local.as_ref().map_or(Vec::new(), LocalStore::processes);
    ready._local = local;
    Ok(ready)
}

/// A store server with the scenario's population in it: the one `given`, or one started
/// here.
fn start_and_load(
    kind: BackendKind,
    given: Option<BackendSpec>,
    prepared: &Prepared,
    quiet: bool,
) -> anyhow::Result<(BackendSpec, Option<LocalStore>)> {
    let (spec, local) = match given {
        Some(spec) => (spec, None),
        None => {
            let local = LocalStore::start(kind, quiet)?;
            (local.spec.clone(), Some(local))
        }
    };
    build_store(&spec, &prepared.model, quiet)?;
    Ok((spec, local))
}

/// Starts `bulkbench serve` (pinned unless `--no-pin`), drives the workload against it,
/// stops it, and summarizes the run with the server's CPU time and memory.
pub(super) fn run_with_server(
    args: &RunArgs,
    prepared: &Prepared,
    served: Served<'_>,
    command: &str,
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    stores: Option<&Stores>,
) -> anyhow::Result<(Summary, RunResult)> {
    let ready = ready_store(served, prepared, work, stores, args.quiet)?;
    let (store, backend) = (&ready.serve, ready.label.clone());
    let (store_pids, store_kind) = (ready.processes.clone(), ready.kind.clone());
    let pinning = if args.no_pin {
        None
    } else {
        CpuSplit::halves(&bulk_loadgen::allowed_cpus()).and_then(CpuSplit::pinning)
    };
    let server = ServerProcess::spawn(
        store,
        prepared,
        &work.join("server.log"),
        pinning.as_ref().map(|p| p.server),
        args.quiet,
    )?;
    info!(addr = %server.addr, startup_ms = server.startup.as_millis() as u64, "server ready");
    let pid = server.child.id();
    let mut config = load_config(prepared, server.addr, None, args)?;
    if let Some(pinning) = &pinning {
        config.event_loops = args
            .generator_threads
            .map_or(pinning.split.generator.len(), usize::from);
        config.cpus = Some(pinning.generator);
    }
    let split = pinning.as_ref().map(|p| &p.split);
    let watched = Watched {
        server: Some(pid),
        store: store_pids,
        ..Watched::default()
    };
    let driven = drive(runtime, prepared, config, &watched, split, args.quiet);
    let (start, end) = (&driven.start, &driven.end);
    let cpu_sets = split.and_then(|split| pinned_times(split, start, end));
    let peak_rss = sys::peak_rss_bytes(pid).unwrap_or_else(|| {
        warn!(
            pid,
            "the server had exited before the end of the run; its peak memory is reported as 0 \
             (see its log)"
        );
        0
    });
    let server_cpu = cpu_delta(start.server, end.server);
    let (addr, startup) = (server.addr, server.startup);
    server.stop()?;
    let mut input = summary_input(
        command,
        args,
        prepared,
        Target {
            address: addr.to_string(),
            external: false,
            backend: Some(backend),
            server_cpus: pinning.as_ref().map(|p| p.split.server.clone()),
            generator_cpus: pinning.map(|p| p.split.generator),
            processes: Vec::new(),
        },
        &driven,
    );
    input.server = server_cpu.map(|cpu| (cpu, peak_rss, Some(startup.as_secs_f64())));
    input.store = cpu_delta(driven.start.store, driven.end.store).map(|cpu| (store_kind, cpu));
    input.cpu_sets = cpu_sets;
    summarize(input, driven.result)
}

/// A `bulkbench serve` child process.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    startup: Duration,
}

impl ServerProcess {
    /// Spawns `bulkbench serve` on 127.0.0.1:0 and waits for its `listening on` line.
    /// `cpus`: pin the server to these (it then sizes its runtime to them).
    fn spawn(
        store: &ServeBackend,
        prepared: &Prepared,
        log: &Path,
        cpus: Option<CpuSet>,
        quiet: bool,
    ) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("cannot find the bulkbench executable")?;
        let concurrency = max_in_flight(&prepared.scenario);
        // At least 1.1x the scenario's concurrency, so the limit never refuses the load.
        let max_connections = (concurrency * 11).div_ceil(10).max(100) + 16;
        // The generator spreads its connections over `bulk_loadgen::LOOPBACK_SOURCES` (16)
        // addresses by session index, so an address holds about a sixteenth of them (625
        // of sessions-10k's 10,000), which serve's default (a tenth of --max-connections)
        // already allows; but how many of one address's sessions are in flight at once
        // varies, and the generator is the one client being measured: the per-address
        // limit is set to the whole limit, where the server does not count at all.
        let max_per_ip = max_connections;
        let server = &prepared.scenario.server;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--backend")
            .arg(store.to_string())
            .args(["--max-connections", &max_connections.to_string()])
            .args(["--max-connections-per-ip", &max_per_ip.to_string()])
            .args(["--max-recipients", &server.max_recipients.get().to_string()])
            .args(["--hostname", "bulkbench.test"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        if server.harvest_resistant {
            command.arg("--harvest-resistant");
        }
        if server.preferences_apply_to == bulk_population::PreferencesApplyTo::All {
            command.args(["--preferences-apply-to", "all"]);
        }
        // STARTTLS sessions need a server that offers it: a throwaway certificate is
        // enough, since the generator does not check it unless --tls-verify.
        if prepared.workload.uses_starttls() {
            command.args(["--tls", "self-signed"]);
        }
        if let Some(cpus) = cpus {
            sys::pin_child(&mut command, cpus);
        }
        sys::tie_child_to_this_process(&mut command);
        let started = Instant::now();
        let mut child = command.spawn().context("cannot start bulkbench serve")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = reader.read_to_end(&mut Vec::new());
        });
        // Loading a large population takes the server a while: show that it is waited for.
        let waiting =
            crate::progress::Steps::spinner("starting the server (it loads the population)", quiet);
        let deadline = Instant::now() + Duration::from_secs(300);
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break Ok(line),
                Err(RecvTimeoutError::Disconnected) => break Ok(String::new()),
                Err(RecvTimeoutError::Timeout) if crate::interrupt::token().is_cancelled() => {
                    break Err("interrupted while the server was starting");
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    break Err("the server did not report `listening on` within 300 s");
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        };
        waiting.finish();
        let line = match line {
            Ok(line) => line,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{why} (log: {})", log.display());
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the server did not start (log: {}): {}",
                log.display(),
                tail(log)
            );
        };
        let addr: SocketAddr = addr.parse().context("bad address in `listening on` line")?;
        Ok(ServerProcess {
            child,
            addr,
            startup: started.elapsed(),
        })
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    warn!(%status, "the server exited with an error");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                warn!("the server did not stop within 30 s of SIGTERM; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
