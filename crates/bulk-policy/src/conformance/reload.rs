//! Reloading while lookups run (`reload_under_lookups`): every batch is answered from
//! one table, old or new, never a partial one, and after the last reload from the newest.
//! The check every backend that swaps its store on SIGHUP runs from its tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{AddressBatch, PolicyBackend, Population, Preference, Regime, Reload, Verdict};

/// Rebuilds (and reloads) after the first table.
pub const RELOADS: u32 = 20;
/// Mailboxes that spell the generation number in binary (`In` for a 1 bit).
const GENERATION_BITS: u32 = 5;
/// Mailboxes whose preference flips with every generation.
const FLIPPING: u32 = 300;
/// Concurrent lookup tasks.
const LOOKUP_TASKS: usize = 3;

fn bit_address(bit: u32) -> String {
    format!("gen{bit}@swap.example")
}

fn flipping_address(i: u32) -> String {
    format!("m{i}@swap.example")
}

/// Whether mailbox `i` accepts bulk mail in generation `generation`.
fn accepts(i: u32, generation: u32) -> bool {
    (i + generation).is_multiple_of(2)
}

fn preference(accept: bool) -> Preference {
    if accept {
        Preference::In
    } else {
        Preference::Out
    }
}

/// The population of generation `generation`: what `rebuild` must write.
pub fn population(generation: u32) -> Population {
    let mut p = Population::default();
    p.add_domain(b"swap.example", Regime::OptIn).unwrap();
    for bit in 0..GENERATION_BITS {
        let address = bit_address(bit);
        p.add_mailbox(address.as_bytes(), preference(generation >> bit & 1 == 1))
            .unwrap();
    }
    for i in 0..FLIPPING {
        let address = flipping_address(i);
        p.add_mailbox(address.as_bytes(), preference(accepts(i, generation)))
            .unwrap();
    }
    p
}

/// Generation bits first, then every flipping mailbox, an unknown one and a foreign one.
fn batch() -> AddressBatch {
    let mut batch = AddressBatch::new();
    for bit in 0..GENERATION_BITS {
        batch.push(bit_address(bit).as_bytes());
    }
    for i in 0..FLIPPING {
        // Subaddressed and upper-cased, so normalization runs against each table's config.
        batch.push(
            flipping_address(i)
                .replace('@', "+tag@")
                .to_uppercase()
                .as_bytes(),
        );
    }
    batch.push(b"nobody@swap.example");
    batch.push(b"m1@elsewhere.example");
    batch
}

fn verdict(accept: bool) -> Verdict {
    if accept {
        Verdict::Accept
    } else {
        Verdict::OptedOut
    }
}

/// The generation a batch's verdicts were answered from, after checking that every
/// verdict of the batch belongs to that same generation.
fn generation_of(verdicts: &[Verdict]) -> Result<u32, String> {
    let bits = GENERATION_BITS as usize;
    let mut generation = 0;
    for (bit, v) in verdicts[..bits].iter().enumerate() {
        match v {
            Verdict::Accept => generation |= 1 << bit,
            Verdict::OptedOut => {}
            other => return Err(format!("generation bit {bit}: {other:?}")),
        }
    }
    let mut expected: Vec<Verdict> = verdicts[..bits].to_vec();
    expected.extend((0..FLIPPING).map(|i| verdict(accepts(i, generation))));
    expected.extend([Verdict::UnknownMailbox, Verdict::NotLocal]);
    if verdicts != expected {
        let first = verdicts.iter().zip(&expected).position(|(a, b)| a != b);
        return Err(format!(
            "batch mixes generations: says {generation}, first difference at {first:?}"
        ));
    }
    Ok(generation)
}

/// Runs lookups on several tasks while the store is rebuilt and reloaded [`RELOADS`]
/// times: `rebuild(g)` writes [`population`]`(g)` where `backend` reloads from (generation
/// 0 must be there already). Panics, naming the task and batch, at the first batch
/// answered from a mix of generations or from an older one than the last seen, and when a
/// reload does not swap. Call it on a multi-threaded tokio runtime.
pub async fn reload_under_lookups<B: PolicyBackend>(
    backend: Arc<B>,
    rebuild: impl Fn(u32) + Send + 'static,
) {
    let stop = Arc::new(AtomicBool::new(false));
    // Per lookup task: 1 + the generation of its latest batch (0: none yet).
    let reached: Arc<Vec<AtomicU32>> = Arc::new((0..LOOKUP_TASKS).map(|_| 0.into()).collect());

    let lookups: Vec<_> = (0..LOOKUP_TASKS)
        .map(|task| {
            let (backend, stop, reached) = (
                Arc::clone(&backend),
                Arc::clone(&stop),
                Arc::clone(&reached),
            );
            tokio::spawn(async move {
                let batch = batch();
                let mut out = Vec::with_capacity(batch.len());
                let (mut batches, mut last, mut seen) =
                    (0u64, 0, vec![false; RELOADS as usize + 1]);
                while !stop.load(Ordering::Relaxed) {
                    out.clear();
                    if let Err(e) = backend.lookup(&batch, &mut out).await {
                        panic!("task {task}, batch {batches}: lookup failed: {e}");
                    }
                    let generation = generation_of(&out)
                        .unwrap_or_else(|e| panic!("task {task}, batch {batches}: {e}"));
                    assert!(
                        (last..=RELOADS).contains(&generation),
                        "task {task}: generation {generation} after {last}"
                    );
                    seen[generation as usize] = true;
                    reached[task].store(generation + 1, Ordering::Relaxed);
                    last = generation;
                    batches += 1;
                    tokio::task::yield_now().await;
                }
                (batches, seen.iter().filter(|&&s| s).count())
            })
        })
        .collect();

    let reloader = {
        let backend = Arc::clone(&backend);
        tokio::task::spawn_blocking(move || {
            for generation in 0..=RELOADS {
                if generation > 0 {
                    rebuild(generation);
                    let outcome = backend.reload();
                    assert!(
                        matches!(outcome, Ok(Reload::Swapped)),
                        "reload to generation {generation}: {outcome:?}"
                    );
                }
                // Every lookup meets this generation before the next: wait until each task
                // has had a batch answered from it (they go on looking up meanwhile).
                let deadline = Instant::now() + Duration::from_secs(60);
                for (task, reached) in reached.iter().enumerate() {
                    while reached.load(Ordering::Relaxed) <= generation {
                        assert!(
                            Instant::now() < deadline,
                            "task {task} got no answer from generation {generation} in 60 s"
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        })
    };
    reloader.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for (task, lookup) in lookups.into_iter().enumerate() {
        let (batches, generations) = lookup.await.unwrap();
        eprintln!("task {task}: {batches} batches over {generations} generations");
        assert_eq!(generations, RELOADS as usize + 1, "task {task}");
    }

    let mut out = Vec::new();
    backend.lookup(&batch(), &mut out).await.unwrap();
    assert_eq!(generation_of(&out), Ok(RELOADS));
}
