//! Load time and lookup cost at a million mailboxes, and the lookup query against the
//! alternative plan. Ignored: run in release, figures on stderr.
//!
//! ```text
//! cargo test -p bulk-policy-postgres --release --test scale -- --ignored --nocapture
//! ```
//!
//! (`BULK_POLICY_POSTGRES_SCALE=200000` picks another size.)
//!
//! The population and the addresses looked up come from `bulk_population`, declared as in
//! the fst and LMDB scale tests so the figures compare: 1,000 domains, lookups about 90%
//! known mailboxes, 5% unknown, 5% foreign, half mixed case, half with a `+tag`.
//!
//! The alternative plan sends the same two arrays to
//! `SELECT .. FROM mailboxes WHERE address = ANY($1) UNION ALL SELECT .. FROM domains
//! WHERE domain = ANY($2)` and joins the answers to the batch in Rust (hash maps). Both run
//! on one connection, one batch at a time, in alternating rounds.
//!
//! Runs under libtest-mimic (`harness = false` in Cargo.toml): where PostgreSQL is missing,
//! a test shows as ignored, naming the package, or fails under
//! `BULKBENCH_REQUIRE_EXTERNAL=1` (see `common`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bulk_policy::{AddressBatch, KeyBatch, NormalizeConfig, PolicyBackend, Population, Verdict};
use bulk_policy_postgres::{PostgresBackend, load};
use bulk_population::{
    NonNegative, PopulationConfig, PopulationModel, RecipientDraws, Share, WorkloadConfig,
};
use common::{Outcome, trial};
use tokio_postgres::Client;

fn main() {
    let trials = vec![
        // Ignored unless asked for (`--ignored`, `--include-ignored`): it loads 1M
        // mailboxes; run it in release, figures on stderr.
        trial("load_and_lookup_figures", load_and_lookup_figures).with_ignored_flag(true),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit();
}

const SEED: u64 = 1;
const DOMAINS: u64 = 1_000;
/// Batches per round and rounds per plan.
const BATCHES: u64 = 500;
const ROUNDS: usize = 4;

fn population_model(mailboxes: u64) -> PopulationModel {
    let config = PopulationConfig {
        mailboxes: mailboxes.try_into().unwrap(),
        domains: DOMAINS.try_into().unwrap(),
        domain_size_zipf: NonNegative::new(0.0).unwrap(),
        opt_in_domain_share: Share::new(0.5).unwrap(),
        explicit_share: Share::new(0.7).unwrap(),
        explicit_opt_in_share: Share::new(4.0 / 7.0).unwrap(),
    };
    PopulationModel::new(&config, SEED)
}

fn draws(model: &PopulationModel) -> RecipientDraws {
    let mix = WorkloadConfig {
        unknown_share: Share::new(0.05).unwrap(),
        foreign_share: Share::new(0.05).unwrap(),
        subaddress_share: Share::new(0.5).unwrap(),
        mixed_case_share: Share::new(0.5).unwrap(),
        ..WorkloadConfig::default()
    };
    RecipientDraws::new(model, &mix, SEED)
}

/// Batch `n` of 100 addresses.
fn batch(n: u64, draws: &RecipientDraws) -> AddressBatch {
    let mut batch = AddressBatch::new();
    for k in 0..100u64 {
        batch.push(draws.recipient(n * 100 + k).address.as_bytes());
    }
    batch
}

/// The two arrays of a batch, as the backend sends them.
fn arrays(normalize: NormalizeConfig, batch: &AddressBatch) -> (Vec<String>, Vec<String>) {
    let mut keys = KeyBatch::default();
    keys.fill(normalize, batch);
    keys.iter()
        .map(|key| {
            let key = key.expect("drawn addresses normalize");
            (
                String::from_utf8(key.key.to_vec()).unwrap(),
                String::from_utf8(key.domain().to_vec()).unwrap(),
            )
        })
        .unzip()
}

/// The alternative: `= ANY` on each table, joined in Rust.
async fn any_lookup(
    client: &Client,
    statement: &tokio_postgres::Statement,
    addresses: &[String],
    domains: &[String],
) -> Vec<Verdict> {
    let rows = client
        .query(statement, &[&addresses, &domains])
        .await
        .unwrap();
    let mut mailboxes = HashMap::new();
    let mut regimes = HashMap::new();
    for row in &rows {
        let key: String = row.get(0);
        match (row.get::<_, Option<i8>>(1), row.get::<_, Option<i8>>(2)) {
            (Some(preference), _) => mailboxes.insert(key, preference as u8),
            (None, Some(regime)) => regimes.insert(key, regime as u8),
            (None, None) => panic!("a row with neither"),
        };
    }
    addresses
        .iter()
        .zip(domains)
        .map(|(address, domain)| {
            let Some(&regime) = regimes.get(domain) else {
                return Verdict::NotLocal;
            };
            match (mailboxes.get(address), regime) {
                (None, _) => Verdict::UnknownMailbox,
                (Some(b'i'), _) | (Some(b'd'), b'o') => Verdict::Accept,
                (Some(_), _) => Verdict::OptedOut,
            }
        })
        .collect()
}

/// `ARRAY['a', 'b']::text[]`.
fn literal(values: &[String]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect();
    format!("ARRAY[{}]::text[]", quoted.join(", "))
}

/// Prints the plan of `sql` for one batch, as a custom plan (the arrays known to the
/// planner) and as the generic plan a prepared statement may settle on after five runs;
/// long lines (the arrays spelled out) are cut.
async fn explain(client: &Client, sql: &str, addresses: &[String], domains: &[String]) {
    client
        .batch_execute(&format!("PREPARE explained(text[], text[]) AS {sql}"))
        .await
        .unwrap();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        // EXPLAIN takes no parameters: the arrays are spelled out.
        let rows = client
            .query(
                &format!(
                    "EXPLAIN (ANALYZE, BUFFERS) EXECUTE explained({}, {})",
                    literal(addresses),
                    literal(domains)
                ),
                &[],
            )
            .await
            .unwrap();
        eprintln!("   {mode}:");
        for row in rows {
            let line: String = row.get(0);
            let cut: String = line.chars().take(120).collect();
            eprintln!(
                "      {cut}{}",
                if cut.len() < line.len() { "..." } else { "" }
            );
        }
    }
    client
        .batch_execute("RESET plan_cache_mode; DEALLOCATE explained")
        .await
        .unwrap();
}

fn mailboxes_to_load() -> u64 {
    std::env::var("BULK_POLICY_POSTGRES_SCALE").map_or(1_000_000, |n| n.parse().expect("a size"))
}

async fn load_and_lookup_figures() -> Outcome {
    let cluster = common::cluster()?;
    let mailboxes = mailboxes_to_load();
    let model = population_model(mailboxes);
    let population: Population = model.build();
    let draws = draws(&model);
    let spec = cluster.spec("scale");
    let mut calls = 0u64;
    let stats = load(&spec, &population, |_| calls += 1).await.unwrap();
    eprintln!(
        "{mailboxes} mailboxes: load {:.2?} ({calls} progress calls), {} bytes in tables and \
         indexes ({:.1} per mailbox)",
        stats.elapsed,
        stats.bytes,
        stats.bytes as f64 / mailboxes as f64
    );
    let again = load(&spec, &population, |_| {}).await.unwrap();
    eprintln!("{mailboxes} mailboxes: load in place {:.2?}", again.elapsed);

    let backend = PostgresBackend::connect(&spec, 1).await.unwrap();
    let normalize = backend.normalize_config();
    let client = common::raw_client(&cluster).await;
    let any_sql = "SELECT address, preference, NULL::\"char\" FROM scale.mailboxes \
                   WHERE address = ANY($1::text[]) \
                   UNION ALL SELECT domain, NULL, regime FROM scale.domains \
                   WHERE domain = ANY($2::text[])";
    let any = client.prepare(any_sql).await.unwrap();
    let batches: Vec<AddressBatch> = (0..BATCHES).map(|n| batch(n, &draws)).collect();
    let keys: Vec<(Vec<String>, Vec<String>)> =
        batches.iter().map(|b| arrays(normalize, b)).collect();

    // Both plans agree with the reference before anything is timed.
    for (batch, (addresses, domains)) in batches.iter().zip(&keys).take(50) {
        let expected: Vec<Verdict> = batch.iter().map(|a| population.verdict_of(a)).collect();
        let mut out = Vec::new();
        backend.lookup(batch, &mut out).await.unwrap();
        assert_eq!(out, expected);
        assert_eq!(
            any_lookup(&client, &any, addresses, domains).await,
            expected
        );
    }

    let (mut unnest_time, mut any_time) = (Duration::ZERO, Duration::ZERO);
    let mut out = Vec::with_capacity(100);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for batch in &batches {
            out.clear();
            backend.lookup(batch, &mut out).await.unwrap();
        }
        unnest_time += started.elapsed();
        let started = Instant::now();
        for (addresses, domains) in &keys {
            any_lookup(&client, &any, addresses, domains).await;
        }
        any_time += started.elapsed();
    }
    let per_batch = |time: Duration| time.as_secs_f64() * 1e6 / (BATCHES as f64 * ROUNDS as f64);
    eprintln!(
        "{mailboxes} mailboxes, batches of 100, one connection, {} batches per plan: \
         unnest join {:.0} us/batch, = ANY + Rust join {:.0} us/batch",
        BATCHES as usize * ROUNDS,
        per_batch(unnest_time),
        per_batch(any_time)
    );

    let (addresses, domains) = &keys[7];
    let lookup_sql = "SELECT k.n, d.regime, m.preference \
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(address, domain, n) \
         LEFT JOIN scale.domains AS d ON d.domain = k.domain \
         LEFT JOIN scale.mailboxes AS m ON m.address = k.address ORDER BY k.n";
    eprintln!("  unnest join, one batch of 100:");
    explain(&client, lookup_sql, addresses, domains).await;
    eprintln!("  = ANY, one batch of 100:");
    explain(&client, any_sql, addresses, domains).await;
    drop(client);
    drop(backend);
    cluster.server.stop().unwrap();
    Ok(())
}
