//! Which policy backend serves, where its store lives, and how a store is built.

use std::path::{Path, PathBuf};
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
    /// The population file loaded into a hash map (startup reads the whole file).
    Memory,
    /// A memory-mapped finite state transducer file; immutable, swapped on SIGHUP.
    Fst,
    /// An LMDB environment; updatable while serving (`bulkbench policy set`).
    Lmdb,
}

impl BackendKind {
    /// Its name in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Fst => "fst",
            BackendKind::Lmdb => "lmdb",
        }
    }

    /// Every known backend, in order.
    pub const ALL: [BackendKind; 3] = [BackendKind::Memory, BackendKind::Fst, BackendKind::Lmdb];

    /// The backend of a name, as `compare --backend` takes it.
    pub fn from_name(name: &str) -> Option<BackendKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A backend and its store: `memory:FILE`, `fst:PATH` or `lmdb:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub kind: BackendKind,
    pub path: PathBuf,
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.path.display())
    }
}

/// Parses `KIND:PATH` for `--backend` and `--store`.
pub fn parse_spec(value: &str) -> Result<BackendSpec, String> {
    let (kind, path) = value
        .split_once(':')
        .ok_or("expected KIND:PATH, as in memory:pop.tsv, fst:pop.fst or lmdb:pop.lmdb")?;
    let kind = BackendKind::from_name(kind).ok_or_else(|| match kind {
        "canned" => "canned has no store: it answers by a fixed rule".to_owned(),
        _ => format!("unknown backend {kind:?}; known: memory, fst, lmdb"),
    })?;
    if path.is_empty() {
        return Err(format!("{}: needs a path", kind.name()));
    }
    Ok(BackendSpec {
        kind,
        path: PathBuf::from(path),
    })
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

/// Builds the store of `kind` for a scenario's population at `path`: the population file
/// for memory, the FST file, or the LMDB environment directory.
///
/// Shows its progress on standard error unless `quiet` (mailboxes generated, then a
/// spinner while the fst or LMDB store is written): 10M mailboxes take tens of seconds.
pub fn build_store(
    kind: BackendKind,
    model: &PopulationModel,
    path: &Path,
    quiet: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let steps = Steps::counting("generating mailboxes", model.mailbox_count(), quiet);
    let generated = |done: u64| steps.at(done);
    match kind {
        BackendKind::Memory => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
            model
                .write_file_with_progress(&mut writer, generated)
                .and_then(|()| std::io::Write::flush(&mut writer))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        BackendKind::Fst => {
            let population = model.build_with_progress(generated);
            steps.waiting("writing the fst store");
            bulk_policy_fst::build(&population, path)
                .with_context(|| format!("cannot build the fst store {}", path.display()))?;
        }
        BackendKind::Lmdb => {
            let population = model.build_with_progress(generated);
            steps.waiting("writing the LMDB store");
            bulk_policy_lmdb::build(&population, path)
                .with_context(|| format!("cannot build the lmdb store {}", path.display()))?;
        }
    }
    steps.finish();
    info!(
        backend = kind.name(),
        mailboxes = model.mailbox_count(),
        build_ms = started.elapsed().as_millis() as u64,
        path = %path.display(),
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
                path: PathBuf::from(path),
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
            ("redis:x", "unknown backend \"redis\""),
            ("redis:x", "canned[:SHARE]"),
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
