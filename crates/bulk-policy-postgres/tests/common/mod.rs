//! What the tests share: a throwaway cluster, and the harness that reports a test ignored
//! where PostgreSQL is missing.
//!
//! A missing program shows a test as ignored, with the package named, in the test output;
//! with `BULKBENCH_REQUIRE_EXTERNAL=1` (as CI runs) it fails instead. libtest decides what
//! is ignored when it compiles (`#[ignore]`), so the test files that start a cluster run
//! under libtest-mimic (`harness = false` in Cargo.toml), which lets a test report itself
//! ignored when it runs: each test is an `async fn` returning [`Outcome`], whose cluster
//! comes from `common::cluster()?`, listed in the file's `main` by [`trial`].

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use bulk_policy_postgres::{LocalPostgres, PostgresSpec, PostgresStoreError};
use libtest_mimic::{Completion, Trial};

/// A program a test needs that is not installed, and the Debian package that brings it.
#[derive(Debug)]
pub struct Missing {
    program: &'static str,
    package: &'static str,
}

/// What a test that starts a cluster returns: `Err` where a program it needs is missing.
pub type Outcome = Result<(), Missing>;

/// The trial `name`, running `test` on a multi-threaded tokio runtime of its own (two
/// workers, as `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`). Where
/// `test` returns [`Missing`] the trial fails if every tool is required
/// (`BULKBENCH_REQUIRE_EXTERNAL=1`, as CI runs), else reports itself ignored, naming the
/// program and how to install it. A panic fails it.
pub fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Outcome>,
{
    Trial::ignorable_test(name, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let Err(Missing { program, package }) = runtime.block_on(test()) else {
            return Ok(Completion::Completed);
        };
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
    })
}

/// A cluster in a fresh temporary folder, or [`Missing`] where PostgreSQL (initdb, pg_ctl,
/// postgres) is not installed; panics on any other error.
///
/// Drop the cluster before the folder: the `Cluster` fields are in that order.
pub fn cluster() -> Result<Cluster, Missing> {
    let dir = tempfile::tempdir().expect("temporary folder");
    match LocalPostgres::start(dir.path()) {
        Ok(server) => Ok(Cluster { server, _dir: dir }),
        Err(PostgresStoreError::NotInstalled { program, package }) => {
            Err(Missing { program, package })
        }
        Err(e) => panic!("start a local PostgreSQL: {e:?}"),
    }
}

/// A running cluster and its folder (removed after the server stopped).
pub struct Cluster {
    pub server: LocalPostgres,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The spec of `schema` in this cluster's database.
    pub fn spec(&self, schema: &str) -> PostgresSpec {
        PostgresSpec::parse(&format!("{}?schema={schema}", self.server.url())).expect("spec")
    }
}

/// `local@domain` as a population file would spell the key: quoted when the local part
/// holds a space or starts with `#` or `@` (as `Population::write_to` does).
pub fn spelled(key: &[u8]) -> String {
    let key = std::str::from_utf8(key).expect("test keys are ASCII");
    let (local, domain) = key.rsplit_once('@').expect("keys have an '@'");
    if local.contains(' ') || local.starts_with(['#', '@']) {
        let escaped = local.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"@{domain}")
    } else {
        key.to_string()
    }
}

/// A population in the file format, with the default normalization.
pub fn population(text: &str) -> bulk_policy::Population {
    bulk_policy::Population::parse(text.as_bytes(), bulk_policy::NormalizeConfig::default())
        .expect("test population")
}

/// Verdicts of `backend` for `addresses`, in one lookup.
pub async fn verdicts(
    backend: &impl bulk_policy::PolicyBackend,
    addresses: &[&str],
) -> Vec<bulk_policy::Verdict> {
    let batch: bulk_policy::AddressBatch = addresses.iter().map(|a| a.as_bytes()).collect();
    let mut out = Vec::new();
    backend.lookup(&batch, &mut out).await.expect("lookup");
    out
}

/// A connection of our own to the cluster, for what the crate's API does not do (locking
/// a table, planting foreign tables); its task ends when the client is dropped.
pub async fn raw_client(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&cluster.server.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
}
