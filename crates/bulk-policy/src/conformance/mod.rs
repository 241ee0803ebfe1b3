//! The conformance suite every [`PolicyBackend`] passes.
//!
//! A backend crate calls [`run`] from one of its tests with a closure that builds the backend
//! from a [`Population`]. The suite checks verdicts against a fixed table and against
//! [`Population::verdict_of`], the reference semantics, and panics with a message listing
//! every failing case (a test harness is its only caller, so panicking is how it reports).
//!
//! Under three normalization configs (default, case-sensitive, no delimiter) it checks:
//! every verdict class, case folding and `+tag` stripping, quoted local parts, unknown
//! mailboxes against unknown domains, single lookups, the whole table as one batch, an empty
//! batch, a scrambled batch of 10,000, 16 lookups in flight at once on one backend, and
//! that `lookup` appends to `out` without touching what is there.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! bulk_policy::conformance::run(bulk_policy::MemoryBackend::new).await;
//! # }
//! ```

pub mod reload;

use std::fmt::Write as _;
use std::future::Future;

use crate::AddressBatch;
use crate::address::NormalizeConfig;
use crate::population::Population;
use crate::{PolicyBackend, Verdict};

/// The population every backend is built from. It covers an opt-in and an opt-out domain
/// (one declared in mixed case, after its mailboxes), `in`, `out` and `default` mailboxes in
/// each, mixed-case entries, quoted local parts (one with a space) and a local part that
/// starts with the delimiter.
pub const POPULATION: &str = "\
# bulk-policy conformance population
ann@in.example\tin
@in.example\topt-in
bob@in.example\tout
carol@in.example\tdefault
Dave.Jones@in.example\tin
\"Ann Smith\"@in.example\tin

@Out.Example\topt-out
erin@out.example\tin\r
frank@out.example\tout
grace@out.example\tdefault
\"Ivy.Lee\"@out.example\tout
+ops@out.example\tout
";

/// Case-sensitive local parts, subaddressing on.
const CASE_SENSITIVE: NormalizeConfig = NormalizeConfig {
    fold_local_case: false,
    recipient_delimiter: Some(b'+'),
};

/// Folding on, subaddressing off.
const NO_DELIMITER: NormalizeConfig = NormalizeConfig {
    fold_local_case: true,
    recipient_delimiter: None,
};

use Verdict::{Accept, NotLocal, OptedOut, UnknownMailbox};

/// Cases under the default config (folding, delimiter `+`).
const DEFAULT_CASES: &[(&str, Verdict)] = &[
    // Every preference in each regime.
    ("ann@in.example", Accept),
    ("bob@in.example", OptedOut),
    ("carol@in.example", OptedOut),
    ("erin@out.example", Accept),
    ("frank@out.example", OptedOut),
    ("grace@out.example", Accept),
    // Case folding of domain and local part; mixed-case entries.
    ("ANN@IN.EXAMPLE", Accept),
    ("ann@In.Example", Accept),
    ("Carol@in.example", OptedOut),
    ("dave.jones@in.example", Accept),
    ("DAVE.JONES@in.example", Accept),
    ("Dave.Jones@in.example", Accept),
    ("Grace@OUT.example", Accept),
    // Subaddresses.
    ("ann+news@in.example", Accept),
    ("bob+news@in.example", OptedOut),
    ("Ann+News+More@in.example", Accept),
    ("ann+@in.example", Accept),
    ("+ops@out.example", OptedOut),
    ("+ops+x@out.example", OptedOut),
    ("ops@out.example", UnknownMailbox),
    // Quoted local parts.
    ("\"ann\"@in.example", Accept),
    ("\"Ann+x\"@in.example", Accept),
    ("\"ann smith\"@in.example", Accept),
    ("\"Ann Smith\"@IN.example", Accept),
    ("ivy.lee@out.example", OptedOut),
    ("\"ivy.lee\"@out.example", OptedOut),
    ("\"iv\\y.LEE\"@out.example", OptedOut),
    ("ann smith@in.example", Accept),
    ("\"a@b\"@in.example", UnknownMailbox),
    // Unknown mailbox versus foreign domain.
    ("nobody@in.example", UnknownMailbox),
    ("nobody@out.example", UnknownMailbox),
    ("NoBody@In.EXAMPLE", UnknownMailbox),
    ("ann@ELSEWHERE.example", NotLocal),
    ("ann@elsewhere.example", NotLocal),
    ("ann@sub.in.example", NotLocal),
    ("ann@example", NotLocal),
    // Addresses with no key are never local.
    ("in.example", NotLocal),
    ("@in.example", NotLocal),
    ("ann@", NotLocal),
    ("\"\"@in.example", NotLocal),
    ("", NotLocal),
];

/// Cases with case-sensitive local parts: only the domain folds.
const CASE_SENSITIVE_CASES: &[(&str, Verdict)] = &[
    ("ann@in.example", Accept),
    ("ann@IN.EXAMPLE", Accept),
    ("ANN@in.example", UnknownMailbox),
    ("Carol@in.example", UnknownMailbox),
    ("carol@in.example", OptedOut),
    ("Dave.Jones@in.example", Accept),
    ("dave.jones@in.example", UnknownMailbox),
    ("ann+news@in.example", Accept),
    ("\"Ivy.Lee\"@out.example", OptedOut),
    ("Ivy.Lee@out.example", OptedOut),
    ("ivy.lee@out.example", UnknownMailbox),
    ("\"Ann Smith\"@in.example", Accept),
    ("\"ann smith\"@in.example", UnknownMailbox),
    ("grace@out.example", Accept),
    ("ann@elsewhere.example", NotLocal),
];

/// Cases with subaddressing off: `+` is an ordinary character.
const NO_DELIMITER_CASES: &[(&str, Verdict)] = &[
    ("ann@in.example", Accept),
    ("ANN@in.example", Accept),
    ("ann+news@in.example", UnknownMailbox),
    ("bob+@in.example", UnknownMailbox),
    ("+ops@out.example", OptedOut),
    ("+ops+x@out.example", UnknownMailbox),
    ("\"Ann+x\"@in.example", UnknownMailbox),
    ("frank@out.example", OptedOut),
    ("ann+news@elsewhere.example", NotLocal),
];

/// Size of the large scrambled batch.
const LARGE_BATCH: usize = 10_000;
/// Lookups in flight at once in the concurrency check.
const CONCURRENT: usize = 16;

/// Runs the suite against backends built by `make`, once per normalization config, and
/// panics listing every failing case (address, expected, got, backend name).
pub async fn run<B: PolicyBackend, F: Fn(Population) -> B>(make: F) {
    let mut failures = Vec::new();
    let configs = [
        ("default", NormalizeConfig::default(), DEFAULT_CASES),
        ("case-sensitive", CASE_SENSITIVE, CASE_SENSITIVE_CASES),
        ("no-delimiter", NO_DELIMITER, NO_DELIMITER_CASES),
    ];
    for (label, config, cases) in configs {
        let population = match Population::parse(POPULATION.as_bytes(), config) {
            Ok(population) => population,
            Err(e) => panic!("conformance population does not parse with {label} config: {e}"),
        };
        let mut suite = Suite {
            population: &population,
            backend: make(population.clone()),
            label,
            failures: &mut failures,
        };
        suite.reference(cases);
        suite.one_by_one(cases).await;
        suite.whole_table(cases).await;
        suite.empty_batch().await;
        suite.large_batch(cases).await;
        suite.concurrent(cases).await;
    }
    if !failures.is_empty() {
        let mut report = format!("{} conformance failure(s):\n", failures.len());
        for failure in &failures {
            let _ = writeln!(report, "  {failure}");
        }
        panic!("{report}");
    }
}

/// One backend under one config, collecting failures rather than stopping at the first.
struct Suite<'a, B> {
    population: &'a Population,
    backend: B,
    label: &'static str,
    failures: &'a mut Vec<String>,
}

impl<B: PolicyBackend> Suite<'_, B> {
    fn fail(&mut self, what: impl std::fmt::Display) {
        let failure = format!(
            "backend {} [{} config]: {what}",
            self.backend.name(),
            self.label
        );
        self.failures.push(failure);
    }

    /// Compares one verdict with the table and with the reference.
    fn check(&mut self, context: &str, address: &str, expected: Verdict, got: Verdict) {
        let reference = self.population.verdict_of(address.as_bytes());
        if got != expected || got != reference {
            self.fail(format_args!(
                "{context}: {address:?}: expected {expected:?} (reference {reference:?}), \
                 got {got:?}"
            ));
        }
    }

    /// The table itself agrees with `Population::verdict_of`, so a wrong table cannot make
    /// every backend look broken.
    fn reference(&mut self, cases: &[(&str, Verdict)]) {
        for &(address, expected) in cases {
            let reference = self.population.verdict_of(address.as_bytes());
            if reference != expected {
                self.fail(format_args!(
                    "reference Population::verdict_of({address:?}) = {reference:?}, table says \
                     {expected:?}"
                ));
            }
        }
    }

    /// Calls `lookup` and checks the contract on `out`: prefix kept, exactly one verdict per
    /// address appended. Returns the appended verdicts.
    async fn lookup(&mut self, context: &str, batch: &AddressBatch) -> Option<Vec<Verdict>> {
        // A non-empty `out` checks that the callee appends rather than clearing.
        let prefix = [NotLocal, Accept, UnknownMailbox];
        let mut out = prefix.to_vec();
        if let Err(e) = self.backend.lookup(batch, &mut out).await {
            self.fail(format_args!("{context}: lookup failed: {e}"));
            return None;
        }
        if out.get(..prefix.len()) != Some(&prefix[..]) {
            self.fail(format_args!(
                "{context}: lookup changed the verdicts already in `out`"
            ));
            return None;
        }
        if out.len() != prefix.len() + batch.len() {
            self.fail(format_args!(
                "{context}: lookup appended {} verdicts for {} addresses",
                out.len().saturating_sub(prefix.len()),
                batch.len()
            ));
            return None;
        }
        Some(out.split_off(prefix.len()))
    }

    async fn one_by_one(&mut self, cases: &[(&str, Verdict)]) {
        let mut batch = AddressBatch::new();
        for &(address, expected) in cases {
            batch.clear();
            batch.push(address.as_bytes());
            let got = self.lookup("single", &batch).await;
            if let Some(&got) = got.as_deref().and_then(<[Verdict]>::first) {
                self.check("single", address, expected, got);
            }
        }
    }

    async fn whole_table(&mut self, cases: &[(&str, Verdict)]) {
        let batch: AddressBatch = cases.iter().map(|(a, _)| a.as_bytes()).collect();
        if let Some(got) = self.lookup("table batch", &batch).await {
            for (&(address, expected), got) in cases.iter().zip(got) {
                self.check("table batch", address, expected, got);
            }
        }
    }

    async fn empty_batch(&mut self) {
        let got = self.lookup("empty batch", &AddressBatch::new()).await;
        if got.as_ref().is_some_and(|got| !got.is_empty()) {
            self.fail("empty batch: verdicts appended");
        }
    }

    /// Many lookups in flight at once on the same backend (as many connections do), each a
    /// differently rotated copy of the table, polled together: each must get its own
    /// verdicts, in its own order.
    async fn concurrent(&mut self, cases: &[(&str, Verdict)]) {
        if cases.is_empty() {
            return;
        }
        let batches: Vec<AddressBatch> = (0..CONCURRENT)
            .map(|k| {
                (0..cases.len())
                    .map(|i| cases[(i + k) % cases.len()].0.as_bytes())
                    .collect()
            })
            .collect();
        let mut outs: Vec<Vec<Verdict>> = vec![Vec::new(); CONCURRENT];
        let results = {
            let backend = &self.backend;
            let futures: Vec<_> = batches
                .iter()
                .zip(outs.iter_mut())
                .map(|(batch, out)| Box::pin(backend.lookup(batch, out)))
                .collect();
            join_all(futures).await
        };
        for (k, (result, got)) in results.into_iter().zip(&outs).enumerate() {
            if let Err(e) = result {
                self.fail(format_args!("concurrent lookup {k}: failed: {e}"));
                continue;
            }
            if got.len() != cases.len() {
                self.fail(format_args!(
                    "concurrent lookup {k}: {} verdicts for {} addresses",
                    got.len(),
                    cases.len()
                ));
                continue;
            }
            for (i, got) in got.iter().enumerate() {
                let (address, expected) = cases[(i + k) % cases.len()];
                if *got != expected {
                    self.fail(format_args!(
                        "concurrent lookup {k}, position {i}: {address:?}: expected \
                         {expected:?}, got {got:?}"
                    ));
                }
            }
        }
    }

    /// A batch of 10,000 addresses in a scrambled order, so a backend that reorders (say, by
    /// shard) and fails to restore the order is caught.
    async fn large_batch(&mut self, cases: &[(&str, Verdict)]) {
        if cases.is_empty() {
            return;
        }
        let order: Vec<usize> = (0..LARGE_BATCH)
            .map(|i| (i * 7_919 + i / 3) % cases.len())
            .collect();
        let batch: AddressBatch = order.iter().map(|&i| cases[i].0.as_bytes()).collect();
        let Some(got) = self.lookup("batch of 10000", &batch).await else {
            return;
        };
        let mut wrong = 0;
        for (position, (&i, got)) in order.iter().zip(got).enumerate() {
            let (address, expected) = cases[i];
            if got != expected {
                wrong += 1;
                // The per-case checks above already name each bad verdict; here only the
                // first few positions, so a broken order does not print 10,000 lines.
                if wrong <= 5 {
                    self.fail(format_args!(
                        "batch of 10000, position {position}: {address:?}: expected {expected:?}, \
                         got {got:?}"
                    ));
                }
            }
        }
        if wrong > 5 {
            self.fail(format_args!(
                "batch of 10000: {wrong} wrong verdicts in all"
            ));
        }
    }
}

/// Polls every future until all are ready, round robin, on the current task: lookups in
/// flight together, with no runtime dependency (a backend's own futures bring theirs).
async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match std::pin::Pin::new(&mut *future).poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
