//! Stores that run as servers of their own, through the CLI: `population -o URL` writes a
//! scenario into Redis or PostgreSQL, `serve` answers from it, `policy set` changes it
//! while serving, and `bench` and `compare` start throwaway store servers (or load one
//! given by URL) and report the store's CPU beside the server's.
//!
//! The store servers come from Debian's `redis-server` and `postgresql`. A missing one
//! shows its tests as ignored, naming the package; with `BULKBENCH_REQUIRE_EXTERNAL=1` (as
//! CI runs) they fail instead. So these tests run under libtest-mimic (`harness = false`).

use std::path::Path;

use bulk_policy_postgres::LocalPostgres;
use bulk_policy_redis::LocalRedis;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod common;

use common::{bulk_replies, ok, opted_in_mailbox, serve, small_scenario};

type Outcome = Result<Completion, Failed>;

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::ignorable_test(
            "redis_serves_what_population_wrote_and_policy_set_changes",
            || served_and_changed("redis"),
        ),
        Trial::ignorable_test(
            "postgres_serves_what_population_wrote_and_policy_set_changes",
            || served_and_changed("postgres"),
        ),
        Trial::ignorable_test(
            "bench_starts_each_store_server_reports_its_cost_and_stops_it",
            bench_starts_each_store_server,
        ),
        Trial::ignorable_test(
            "compare_loads_a_store_server_given_by_url_under_its_prefix",
            compare_loads_a_given_store,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// A throwaway store server of `kind` in `dir`, and its URL; `None` when its programs
/// are missing.
enum Local {
    Redis(LocalRedis),
    Postgres(LocalPostgres),
}

impl Local {
    fn start(kind: &str, dir: &Path) -> Result<Option<Local>, Failed> {
        match kind {
            "redis" => match LocalRedis::start(dir) {
                Ok(redis) => Ok(Some(Local::Redis(redis))),
                Err(error) if error.is_not_installed() => Ok(None),
                Err(error) => Err(format!("{error:#}").into()),
            },
            _ if !bulk_policy_postgres::postgres_installed() => Ok(None),
            _ => Ok(Some(Local::Postgres(
                LocalPostgres::start(dir).map_err(|error| format!("{error:#}"))?,
            ))),
        }
    }

    /// Its URL with a key prefix or schema of `name`.
    fn url(&self, name: &str) -> String {
        match self {
            Local::Redis(redis) => format!("{}?prefix={name}", redis.url()),
            Local::Postgres(postgres) => format!("{}?schema={name}", postgres.url()),
        }
    }
}

fn needs(kind: &str) -> Outcome {
    match kind {
        "redis" => common::missing("redis-server", "apt-get install redis-server"),
        _ => common::missing("PostgreSQL's server programs", "apt-get install postgresql"),
    }
}

fn served_and_changed(kind: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let Some(local) = Local::start(kind, store_dir.path())? else {
        return needs(kind);
    };
    let scenario = small_scenario(dir.path());
    let address = opted_in_mailbox(&scenario);
    let url = local.url("cli");
    ok(&[
        "population",
        scenario.to_str().unwrap(),
        "--backend",
        kind,
        "-o",
        &url,
    ]);
    let spec = format!("{kind}:{url}");
    let server = serve(&["--backend", &spec]);
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["250 2.1.5"]);
    assert_eq!(
        bulk_replies(&server.addr, &["nobody@nowhere.test"]),
        ["554 5.7.1"]
    );
    ok(&["policy", "set", "--store", &spec, &address, "out"]);
    // The next lookup of the running server sees the change: no cache here.
    assert_eq!(bulk_replies(&server.addr, &[&address]), ["550 5.7.1"]);
    let got = ok(&["policy", "get", "--store", &spec, &address]);
    assert!(
        String::from_utf8_lossy(&got.stdout).contains(&format!("{address}\tout")),
        "{got:?}"
    );
    Ok(Completion::Completed)
}

fn bench_starts_each_store_server() -> Outcome {
    let have_redis = LocalRedis::start(tempfile::tempdir().unwrap().path())
        .map(drop)
        .map_err(|error| error.is_not_installed());
    if have_redis == Err(true) {
        return needs("redis");
    }
    if !bulk_policy_postgres::postgres_installed() {
        return needs("postgres");
    }
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    for kind in ["redis", "redis-cluster", "postgres"] {
        let out = dir.path().join(format!("run-{kind}"));
        ok(&[
            "bench",
            scenario.to_str().unwrap(),
            "--backend",
            kind,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let summary = common::summary(&out);
        assert_eq!(summary["mismatches"]["total"], 0, "{kind}");
        assert_eq!(summary["totals"]["sessions_completed"], 300, "{kind}");
        assert_eq!(summary["target"]["backend"], kind);
        // The store ran as processes of the run's own: its cost is reported (it may
        // round to zero in a run this short, but it is there).
        assert_eq!(summary["store"]["kind"], kind, "{summary}");
        assert!(summary["store"]["cpu_seconds"].as_f64().unwrap() >= 0.0);
    }
    // Every store server was stopped: `bench` left no child behind.
    assert_eq!(common::children_of(std::process::id()), Vec::<u32>::new());
    Ok(Completion::Completed)
}

fn compare_loads_a_given_store() -> Outcome {
    let store_dir = tempfile::tempdir().unwrap();
    let Some(local) = Local::start("redis", store_dir.path())? else {
        return needs("redis");
    };
    let dir = tempfile::tempdir().unwrap();
    let scenario = small_scenario(dir.path());
    let out = dir.path().join("cmp");
    let given = format!("redis:{}", local.url("cmp"));
    ok(&[
        "compare",
        scenario.to_str().unwrap(),
        "--backend",
        "memory",
        "--backend",
        &given,
        "--repeat",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let runs = common::check_compare_runs(&out);
    assert_eq!(runs, 4);
    let comparison: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("comparison.json")).unwrap()).unwrap();
    for arm in comparison["arms"].as_array().unwrap() {
        assert_eq!(arm["repeats"], 2, "{arm}");
        assert!(arm["error"].is_null(), "{arm}");
    }
    // The population went in under the URL's prefix, where a server can read it.
    let spec = format!("redis:{}", local.url("cmp"));
    let address = opted_in_mailbox(&scenario);
    let got = ok(&["policy", "get", "--store", &spec, &address]);
    assert!(
        String::from_utf8_lossy(&got.stdout).contains("\tin"),
        "{got:?}"
    );
    Ok(Completion::Completed)
}
