//! A read-through cache in front of any backend (feature `cache`): for stores across the
//! network (Redis, PostgreSQL), where a lookup costs a round trip.
//!
//! Entries are keyed by the address exactly as the RCPT wrote it (`Ann@x.org` and
//! `ann@x.org` are cached apart: the cache sits before normalization, which is the
//! backend's), hold the verdict the backend gave, and expire a fixed time after they were
//! fetched. So a change made in the store (`bulkbench policy set`) reaches the server's
//! replies within that time (the TTL), never later; with no cache it is seen by the next
//! lookup. Failed lookups are never cached.
//!
//! The cache is [moka](https://docs.rs/moka)'s synchronous one: concurrent, bounded by
//! entry count with a TinyLFU admission policy (a scan of addresses seen once does not
//! evict the hot ones), time to live per entry. Written by hand, each of those would be a
//! product of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::{AddressBatch, PolicyBackend, PolicyError, Reload, ReloadError, Verdict};

/// How large the cache is and how stale an entry may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most entries held (one per distinct address).
    pub entries: u64,
    /// How long an entry is served after it was fetched.
    pub ttl: Duration,
}

/// `inner` behind a read-through cache: a batch's cached addresses are answered from
/// memory, the rest go to `inner` in one batch of their own (in the original order), and
/// their verdicts are cached. Built without a [`CacheConfig`], it passes every lookup
/// through and counts nothing: a server wraps every backend alike, with or without a
/// cache.
pub struct CachedBackend<B> {
    inner: B,
    cache: Option<Cache<Box<[u8]>, Verdict>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<B: PolicyBackend> CachedBackend<B> {
    /// `inner` behind a cache sized and timed by `config`, or behind none.
    pub fn new(inner: B, config: Option<CacheConfig>) -> Self {
        CachedBackend {
            inner,
            cache: config.map(|config| {
                Cache::builder()
                    .max_capacity(config.entries)
                    .time_to_live(config.ttl)
                    .build()
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// (hits, misses) so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The backend behind the cache.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: PolicyBackend> PolicyBackend for CachedBackend<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        let Some(cache) = &self.cache else {
            return self.inner.lookup(batch, out).await;
        };
        let start = out.len();
        let mut missed = AddressBatch::new();
        let mut missed_at = Vec::new();
        for (i, address) in batch.iter().enumerate() {
            match cache.get(address) {
                Some(verdict) => out.push(verdict),
                None => {
                    // A placeholder, overwritten below or truncated away on error.
                    out.push(Verdict::NotLocal);
                    missed.push(address);
                    missed_at.push(start + i);
                }
            }
        }
        let hits = (batch.len() - missed.len()) as u64;
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses
            .fetch_add(missed.len() as u64, Ordering::Relaxed);
        if missed.is_empty() {
            return Ok(());
        }
        let mut fetched = Vec::with_capacity(missed.len());
        if let Err(error) = self.inner.lookup(&missed, &mut fetched).await {
            out.truncate(start);
            return Err(error);
        }
        if fetched.len() != missed.len() {
            out.truncate(start);
            return Err(PolicyError::Unavailable {
                backend: self.inner.name(),
                reason: format!("{} verdicts for a batch of {}", fetched.len(), missed.len()),
            });
        }
        for ((at, address), verdict) in missed_at.into_iter().zip(missed.iter()).zip(fetched) {
            out[at] = verdict;
            cache.insert(address.into(), verdict);
        }
        Ok(())
    }

    fn reload(&self) -> Result<Reload, ReloadError> {
        let reload = self.inner.reload()?;
        // A new store: what the cache holds came from the old one. A store that changes in
        // place: emptying the cache makes its changes seen at once, as SIGHUP promises.
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
        Ok(reload)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let (hits, misses) = self.hits_and_misses();
        let mut counters = match self.cache {
            Some(_) => vec![("cache_hits", hits), ("cache_misses", misses)],
            None => Vec::new(),
        };
        counters.extend(self.inner.counters());
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryBackend, NormalizeConfig, Population, Preference, Regime};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A memory backend that counts the addresses it is asked and can be made to fail.
    struct Counting {
        inner: MemoryBackend,
        asked: AtomicU64,
        down: Arc<AtomicBool>,
    }

    impl PolicyBackend for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }

        async fn lookup(
            &self,
            batch: &AddressBatch,
            out: &mut Vec<Verdict>,
        ) -> Result<(), PolicyError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(PolicyError::Unavailable {
                    backend: "counting",
                    reason: "down".into(),
                });
            }
            self.asked.fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.inner.lookup(batch, out).await
        }
    }

    fn backend(ttl: Duration) -> (CachedBackend<Counting>, Arc<AtomicBool>) {
        let mut population = Population::new(NormalizeConfig::default());
        population.add_domain(b"x.org", Regime::OptOut).unwrap();
        population.add_mailbox(b"in@x.org", Preference::In).unwrap();
        population
            .add_mailbox(b"out@x.org", Preference::Out)
            .unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let counting = Counting {
            inner: MemoryBackend::new(population),
            asked: AtomicU64::new(0),
            down: down.clone(),
        };
        let config = CacheConfig { entries: 100, ttl };
        (CachedBackend::new(counting, Some(config)), down)
    }

    fn batch(addresses: &[&str]) -> AddressBatch {
        addresses.iter().map(|a| a.as_bytes()).collect()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn cached_addresses_are_answered_without_the_backend_in_batch_order() {
        use Verdict::{Accept, NotLocal, OptedOut, UnknownMailbox};
        let (cached, _) = backend(Duration::from_secs(60));
        let mut out = vec![Accept]; // what the caller had: kept
        block_on(cached.lookup(&batch(&["in@x.org", "out@x.org"]), &mut out)).unwrap();
        assert_eq!(out, [Accept, Accept, OptedOut]);
        assert_eq!(cached.inner().asked.load(Ordering::Relaxed), 2);
        out.clear();
        let mixed = batch(&["zed@x.org", "out@x.org", "a@y.net", "in@x.org"]);
        block_on(cached.lookup(&mixed, &mut out)).unwrap();
        assert_eq!(out, [UnknownMailbox, OptedOut, NotLocal, Accept]);
        // Only the two new addresses went to the backend.
        assert_eq!(cached.inner().asked.load(Ordering::Relaxed), 4);
        assert_eq!(cached.hits_and_misses(), (2, 4));
        assert_eq!(cached.counters(), [("cache_hits", 2), ("cache_misses", 4)]);
    }

    #[test]
    fn a_failed_lookup_leaves_the_output_and_the_cache_as_they_were() {
        let (cached, down) = backend(Duration::from_secs(60));
        let mut out = vec![Verdict::Accept];
        block_on(cached.lookup(&batch(&["in@x.org"]), &mut out)).unwrap();
        down.store(true, Ordering::Relaxed);
        // A hit and a miss: the miss fails the batch, and nothing of it stays.
        let error = block_on(cached.lookup(&batch(&["in@x.org", "out@x.org"]), &mut out));
        assert!(error.is_err());
        assert_eq!(out, [Verdict::Accept, Verdict::Accept]);
        down.store(false, Ordering::Relaxed);
        out.clear();
        block_on(cached.lookup(&batch(&["out@x.org"]), &mut out)).unwrap();
        assert_eq!(out, [Verdict::OptedOut]);
        assert_eq!(
            cached.inner().asked.load(Ordering::Relaxed),
            2,
            "out@ asked once"
        );
    }

    #[test]
    fn without_a_config_every_lookup_goes_through_and_nothing_is_counted() {
        let (cached, _) = backend(Duration::from_secs(60));
        let through = CachedBackend::new(cached.inner, None);
        let mut out = Vec::new();
        for _ in 0..3 {
            block_on(through.lookup(&batch(&["in@x.org"]), &mut out)).unwrap();
        }
        assert_eq!(out, [Verdict::Accept; 3]);
        assert_eq!(through.inner().asked.load(Ordering::Relaxed), 3);
        assert!(through.counters().is_empty());
    }

    #[test]
    fn entries_expire_after_their_time_to_live() {
        let (cached, _) = backend(Duration::from_millis(50));
        let mut out = Vec::new();
        block_on(cached.lookup(&batch(&["in@x.org"]), &mut out)).unwrap();
        block_on(cached.lookup(&batch(&["in@x.org"]), &mut out)).unwrap();
        assert_eq!(cached.inner().asked.load(Ordering::Relaxed), 1);
        // Past the TTL (polled: moka's clock is coarse on a busy machine), asked again.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cached.inner().asked.load(Ordering::Relaxed) == 1 {
            assert!(std::time::Instant::now() < deadline, "never expired");
            std::thread::sleep(Duration::from_millis(20));
            block_on(cached.lookup(&batch(&["in@x.org"]), &mut out)).unwrap();
        }
        assert!(out.iter().all(|v| *v == Verdict::Accept));
    }
}
