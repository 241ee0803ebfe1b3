//! What the tests share: a throwaway cluster, skipped loudly where PostgreSQL is missing.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use bulk_policy_postgres::{LocalPostgres, PostgresSpec, postgres_installed};

/// Whether CI demands every external tool (then a missing PostgreSQL fails the test).
pub fn required() -> bool {
    std::env::var_os("BULKBENCH_REQUIRE_EXTERNAL").is_some_and(|v| v == "1")
}

/// A cluster in a fresh temporary folder, or `None` (having said so on stderr) where
/// PostgreSQL is not installed; panics then under `BULKBENCH_REQUIRE_EXTERNAL=1`.
///
/// Drop the cluster before the folder: the `Cluster` fields are in that order.
pub fn cluster() -> Option<Cluster> {
    if !postgres_installed() {
        assert!(
            !required(),
            "PostgreSQL is required (BULKBENCH_REQUIRE_EXTERNAL=1) but initdb is missing: \
             apt-get install postgresql"
        );
        eprintln!(
            "\n*** SKIPPED: needs initdb (Debian package postgresql); this check did not run \
             ***\n"
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = LocalPostgres::start(dir.path()).expect("start a local PostgreSQL");
    Some(Cluster { server, _dir: dir })
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
