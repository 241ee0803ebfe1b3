//! Which policy backend serves, where its store lives, and how a store is built.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use bulk_policy::AcceptShare;
use bulk_population::PopulationModel;
use clap::ValueEnum;
use tracing::info;

use crate::progress::Steps;

/// The policy backends this build knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The population file loaded into a hash map (startup reads the whole file); SIGHUP
    /// reads it again.
    Memory,
    /// A finite state transducer file, read into memory (or mapped); immutable, swapped on
    /// SIGHUP.
    Fst,
    /// An LMDB environment; updatable while serving (`bulkbench policy set`).
    Lmdb,
    /// A Redis server (one key prefix per population), shared by every server that
    /// points at it; updatable while serving. One pipeline per pipelined read.
    Redis,
    /// A Redis Cluster: a batch's domains split by node, one pipeline to each, together.
    RedisCluster,
    /// A PostgreSQL database (one schema per population), shared by every server that
    /// points at it; updatable while serving. One query per pipelined read.
    Postgres,
}

impl BackendKind {
    /// Its name in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Fst => "fst",
            BackendKind::Lmdb => "lmdb",
            BackendKind::Redis => "redis",
            BackendKind::RedisCluster => "redis-cluster",
            BackendKind::Postgres => "postgres",
        }
    }

    /// Every known backend, in order.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Memory,
        BackendKind::Fst,
        BackendKind::Lmdb,
        BackendKind::Redis,
        BackendKind::RedisCluster,
        BackendKind::Postgres,
    ];

    /// The store is a server of its own, reached by a URL, not a file or folder.
    pub fn is_remote(self) -> bool {
        matches!(
            self,
            BackendKind::Redis | BackendKind::RedisCluster | BackendKind::Postgres
        )
    }

    /// Every known backend's name, for error messages.
    pub fn names() -> String {
        Self::ALL.map(BackendKind::name).join(", ")
    }

    /// The backend of a name, as `compare --backend` takes it.
    pub fn from_name(name: &str) -> Option<BackendKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A backend and its store: `memory:FILE`, `fst:PATH`, `lmdb:PATH`, or a store server's
/// URL: `redis:redis://HOST:PORT[/DB][?prefix=P]`, `redis-cluster:redis://HOST:PORT,...`,
/// `postgres:postgresql://USER@HOST:PORT/DB[?schema=S]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub kind: BackendKind,
    /// A path, or for a store server ([`BackendKind::is_remote`]) its URL.
    pub location: String,
}

impl BackendSpec {
    /// A store in a file or folder.
    pub fn file(kind: BackendKind, path: &Path) -> BackendSpec {
        BackendSpec {
            kind,
            location: path.display().to_string(),
        }
    }

    /// The store's file or folder (meaningful for the backends that are not remote).
    pub fn path(&self) -> &Path {
        Path::new(&self.location)
    }
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.location)
    }
}

/// Parses `KIND:PATH` (or `KIND:URL`) for `--backend` and `--store`. A URL is checked
/// here, so a bad one is a flag error.
pub fn parse_spec(value: &str) -> Result<BackendSpec, String> {
    let (kind, location) = value.split_once(':').ok_or(
        "expected KIND:PATH, as in memory:pop.tsv, fst:pop.fst or lmdb:pop.lmdb, or KIND:URL, \
         as in postgres:postgresql://bulk@127.0.0.1:5432/postgres",
    )?;
    let kind = BackendKind::from_name(kind).ok_or_else(|| match kind {
        "canned" => "canned has no store: it answers by a fixed rule".to_owned(),
        _ => format!("unknown backend {kind:?}; known: {}", BackendKind::names()),
    })?;
    if location.is_empty() {
        return Err(match kind.is_remote() {
            true => format!("{}: needs the store's URL", kind.name()),
            false => format!("{}: needs a path", kind.name()),
        });
    }
    let spec = BackendSpec {
        kind,
        location: location.to_owned(),
    };
    if kind.is_remote() {
        crate::store::RemoteSpec::of(&spec).map_err(|e| format!("{e:#}"))?;
    }
    Ok(spec)
}

/// Parses what `bench --backend` and `compare --backend` take: a kind, whose store the
/// run builds from the scenario (starting a throwaway server for redis, redis-cluster and
/// postgres), or `KIND:URL` for a store server already running, into which the run writes
/// the scenario's population. Returns the text, as arms are named by it.
pub fn parse_run_backend(value: &str) -> Result<String, String> {
    if BackendKind::from_name(value).is_some() {
        return Ok(value.to_owned());
    }
    match parse_spec(value) {
        Ok(spec) if spec.kind.is_remote() => Ok(value.to_owned()),
        Ok(spec) => Err(format!(
            "a {} store is built from the scenario: give the kind alone",
            spec.kind.name()
        )),
        Err(error) if value.contains(':') => Err(error),
        Err(_) => Err(format!(
            "unknown backend {value:?}; known: {} (or KIND:URL for a store server)",
            BackendKind::names()
        )),
    }
}

/// What `serve --backend` runs: a backend with its store, or the canned rule, which has
/// none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeBackend {
    /// `memory:FILE`, `fst:PATH` or `lmdb:PATH`.
    Store(BackendSpec),
    /// `canned` or `canned:SHARE`: every RCPT answered by the rule, no lookup
    /// ([`bulk_policy::CannedBackend`]).
    Canned(AcceptShare),
}

impl std::fmt::Display for ServeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeBackend::Store(spec) => spec.fmt(f),
            ServeBackend::Canned(share) => write!(f, "canned:{share}"),
        }
    }
}

/// Parses `serve --backend`: `KIND:PATH` ([`parse_spec`]), `canned` (accept every RCPT)
/// or `canned:SHARE` (accept that share of them, a number in [0, 1]).
pub fn parse_serve_backend(value: &str) -> Result<ServeBackend, String> {
    if value == "canned" {
        return Ok(ServeBackend::Canned(AcceptShare::ALL));
    }
    if let Some(share) = value.strip_prefix("canned:") {
        return share
            .parse()
            .map(ServeBackend::Canned)
            .map_err(|error| format!("canned:SHARE: {error}"));
    }
    parse_spec(value).map(ServeBackend::Store).map_err(|error| {
        format!("{error} (or canned[:SHARE], every RCPT answered by a fixed rule)")
    })
}

/// Builds the store of `spec` for a scenario's population: the population file for
/// memory, the FST file, the LMDB environment directory, or the population written into a
/// store server (replacing what its schema held).
///
/// Shows its progress on standard error unless `quiet` (mailboxes generated, then the
/// store written): 10M mailboxes take tens of seconds.
pub fn build_store(spec: &BackendSpec, model: &PopulationModel, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let steps = Steps::counting("generating mailboxes", model.mailbox_count(), quiet);
    let generated = |done: u64| steps.at(done);
    let path = spec.path();
    match spec.kind {
        BackendKind::Memory => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
            model
                .write_file_with_progress(&mut writer, generated)
                .and_then(|()| std::io::Write::flush(&mut writer))
                .with_context(|| format!("cannot write {}", path.display()))?;
            steps.finish();
        }
        BackendKind::Fst => {
            let population = model.build_with_progress(generated);
            steps.waiting("writing the fst store");
            bulk_policy_fst::build(&population, path)
                .with_context(|| format!("cannot build the fst store {}", path.display()))?;
            steps.finish();
        }
        BackendKind::Lmdb => {
            let population = model.build_with_progress(generated);
            steps.waiting("writing the LMDB store");
            bulk_policy_lmdb::build(&population, path)
                .with_context(|| format!("cannot build the lmdb store {}", path.display()))?;
            steps.finish();
        }
        BackendKind::Redis | BackendKind::RedisCluster | BackendKind::Postgres => {
            let population = model.build_with_progress(generated);
            steps.finish();
            crate::store::load(spec, &population, quiet)?;
        }
    }
    info!(
        backend = spec.kind.name(),
        mailboxes = model.mailbox_count(),
        build_ms = started.elapsed().as_millis() as u64,
        store = %spec.location,
        "store built"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_backends_are_stores_or_the_canned_rule() {
        let store = |kind, path: &str| {
            ServeBackend::Store(BackendSpec {
                kind,
                location: path.to_owned(),
            })
        };
        let canned = |share: f64| ServeBackend::Canned(AcceptShare::new(share).unwrap());
        for (text, parsed, printed) in [
            (
                "memory:pop.tsv",
                store(BackendKind::Memory, "pop.tsv"),
                None,
            ),
            ("fst:/a:b.fst", store(BackendKind::Fst, "/a:b.fst"), None),
            ("lmdb:x", store(BackendKind::Lmdb, "x"), None),
            (
                "redis:redis://127.0.0.1:6379/0?prefix=p1",
                store(BackendKind::Redis, "redis://127.0.0.1:6379/0?prefix=p1"),
                None,
            ),
            (
                "redis-cluster:redis://127.0.0.1:7000,redis://127.0.0.1:7001",
                store(
                    BackendKind::RedisCluster,
                    "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
                ),
                None,
            ),
            (
                "postgres:postgresql://bulk@127.0.0.1:5432/postgres?schema=s1",
                store(
                    BackendKind::Postgres,
                    "postgresql://bulk@127.0.0.1:5432/postgres?schema=s1",
                ),
                None,
            ),
            ("canned", canned(1.0), Some("canned:1")),
            ("canned:1", canned(1.0), None),
            ("canned:0", canned(0.0), None),
            ("canned:0.25", canned(0.25), None),
            ("canned:.5", canned(0.5), Some("canned:0.5")),
        ] {
            assert_eq!(parse_serve_backend(text), Ok(parsed.clone()), "{text}");
            let printed = printed.unwrap_or(text);
            assert_eq!(parsed.to_string(), printed, "{text}");
            assert_eq!(
                parse_serve_backend(printed),
                Ok(parsed),
                "{text} round trip"
            );
        }
        for (bad, needle) in [
            ("canned:1.5", "1.5 is not a share"),
            ("canned:-1", "-1 is not a share"),
            ("canned:x", "\"x\" is not a number"),
            ("canned:", "\"\" is not a number"),
            ("canned:NaN", "NaN is not a share"),
            ("memory:", "needs a path"),
            ("redis:rediss://h:6379", "bad Redis spec"),
            ("redis:rediss://h:6379", "canned[:SHARE]"),
            ("redis:", "needs the store's URL"),
            ("postgres:postgresql://u@h/db?schema=Bad-Name", "schema"),
            ("mongo:x", "unknown backend \"mongo\""),
            ("memory", "expected KIND:PATH"),
        ] {
            let error = parse_serve_backend(bad).unwrap_err();
            assert!(error.contains(needle), "{bad}: {error}");
        }
        // A store flag (`policy --store`) says why canned is not one.
        let error = parse_spec("canned:0.5").unwrap_err();
        assert!(error.contains("no store"), "{error}");
    }
}
