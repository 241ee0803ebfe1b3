//! The conformance suite against the in-memory backend, and against broken backends to show
//! the suite catches them.

use bulk_policy::{
    AddressBatch, MemoryBackend, PolicyBackend, PolicyError, Population, Verdict, conformance,
};

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run(MemoryBackend::new).await;
}

/// Answers every address with the same verdict.
struct Constant(Verdict);

impl PolicyBackend for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        out.extend(batch.iter().map(|_| self.0));
        Ok(())
    }
}

#[tokio::test]
#[should_panic(
    expected = "backend constant [default config]: single: \"bob@in.example\": expected OptedOut (reference OptedOut), got Accept"
)]
async fn wrong_verdicts_are_listed() {
    conformance::run(|_| Constant(Verdict::Accept)).await;
}

/// The memory backend, but clearing `out` first: breaks the append contract.
struct Clearing(MemoryBackend);

impl PolicyBackend for Clearing {
    fn name(&self) -> &'static str {
        "clearing"
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        out.clear();
        self.0.lookup(batch, out).await
    }
}

#[tokio::test]
#[should_panic(expected = "lookup changed the verdicts already in `out`")]
async fn clearing_out_is_caught() {
    conformance::run(|p: Population| Clearing(MemoryBackend::new(p))).await;
}

/// Always unavailable.
struct Down;

impl PolicyBackend for Down {
    fn name(&self) -> &'static str {
        "down"
    }

    async fn lookup(&self, _: &AddressBatch, _: &mut Vec<Verdict>) -> Result<(), PolicyError> {
        Err(PolicyError::Unavailable {
            backend: "down",
            reason: "connection refused".into(),
        })
    }
}

#[tokio::test]
#[should_panic(
    expected = "backend down [no-delimiter config]: empty batch: lookup failed: policy backend down unavailable: connection refused"
)]
async fn errors_are_failures() {
    conformance::run(|_| Down).await;
}
