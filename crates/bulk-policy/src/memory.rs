//! The in-memory backend: every verdict resolved at build time, one hash probe per lookup.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::AddressBatch;
use crate::address::NormalizeConfig;
use crate::keys::KeyBatch;
use crate::population::Population;
use crate::{PolicyBackend, PolicyError, Verdict};

/// A [`PolicyBackend`] holding the whole population in hash maps.
///
/// Preferences and regimes are folded into one verdict per mailbox when the backend is
/// built, so looking up a known mailbox costs one normalization and one probe; only an
/// unknown key costs a second probe, in the set of served domains.
///
/// FxHash is not collision-resistant, and that is fine here: the maps are built once from
/// the population file and never grow afterwards. Lookups never insert, so an attacker
/// choosing RCPT addresses cannot build up colliding keys; a hashbrown probe's length
/// depends on the stored keys and the load factor, not on the key probed, so a crafted
/// address costs one hash of at most a line's length plus an ordinary probe. The stored
/// keys come from the operator, not from the network.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    normalize: NormalizeConfig,
    /// Normalized `local@domain` -> final verdict (never `NotLocal` or `UnknownMailbox`).
    verdicts: FxHashMap<Box<[u8]>, Verdict>,
    /// Served domains, lowercased: tells an unknown mailbox from a foreign domain.
    served: FxHashSet<Box<[u8]>>,
}

impl MemoryBackend {
    /// Builds the backend, taking the population's keys without copying them.
    pub fn new(population: Population) -> Self {
        let (normalize, domains, mailboxes) = population.into_parts();
        let verdicts = mailboxes
            .into_iter()
            .map(|(key, preference)| {
                let domain = memchr::memrchr(b'@', &key).and_then(|at| key.get(at + 1..));
                // A population guarantees every mailbox's domain is served; were it not,
                // the mailbox would be as unreachable as any address of a foreign domain.
                let verdict = domain
                    .and_then(|d| domains.get(d))
                    .map_or(Verdict::NotLocal, |regime| preference.verdict(*regime));
                (key, verdict)
            })
            .collect();
        MemoryBackend {
            normalize,
            verdicts,
            served: domains.into_keys().collect(),
        }
    }

    /// The verdict for one address; `scratch` holds its key, and is reused across calls so a
    /// lookup allocates nothing.
    pub fn lookup_one(&self, address: &[u8], scratch: &mut Vec<u8>) -> Verdict {
        let Ok(at) = self.normalize.normalize_into(address, scratch) else {
            return Verdict::NotLocal;
        };
        if let Some(verdict) = self.verdicts.get(scratch.as_slice()) {
            return *verdict;
        }
        match scratch.get(at + 1..) {
            Some(domain) if self.served.contains(domain) => Verdict::UnknownMailbox,
            _ => Verdict::NotLocal,
        }
    }

    /// The normalization lookups use (the population's).
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.normalize
    }

    /// Number of known mailboxes.
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    /// Whether no mailbox is known.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    /// Number of served domains.
    pub fn domain_count(&self) -> usize {
        self.served.len()
    }
}

impl PolicyBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn lookup(
        &self,
        batch: &AddressBatch,
        out: &mut Vec<Verdict>,
    ) -> Result<(), PolicyError> {
        // Nothing here waits: the whole batch is resolved within the first poll.
        out.reserve(batch.len());
        KeyBatch::with_thread_local(|keys| self.lookup_batch(batch, keys, out));
        Ok(())
    }
}

impl MemoryBackend {
    /// Two passes (see [`KeyBatch`]): normalize every address of the batch, then probe
    /// every key back to back, so the CPU overlaps the probes' cache misses (measured in the
    /// `rcpt_lookup` bench group: about 1.6x faster on a 1,000,000-mailbox table).
    fn lookup_batch(&self, batch: &AddressBatch, keys: &mut KeyBatch, out: &mut Vec<Verdict>) {
        keys.fill(self.normalize, batch);
        out.extend(keys.iter().map(|key| {
            let Some(key) = key else {
                return Verdict::NotLocal;
            };
            if let Some(verdict) = self.verdicts.get(key.key) {
                *verdict
            } else if self.served.contains(key.domain()) {
                Verdict::UnknownMailbox
            } else {
                Verdict::NotLocal
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::{Preference, Regime};

    #[test]
    fn lookup_one_table() {
        let mut population = Population::default();
        population.add_domain(b"In.Example", Regime::OptIn).unwrap();
        population
            .add_domain(b"out.example", Regime::OptOut)
            .unwrap();
        for (address, preference) in [
            (&b"ann@in.example"[..], Preference::In),
            (b"bob@in.example", Preference::Out),
            (b"carol@in.example", Preference::Default),
            (b"Dave@out.example", Preference::Default),
            (b"erin@out.example", Preference::Out),
        ] {
            population.add_mailbox(address, preference).unwrap();
        }
        let backend = MemoryBackend::new(population.clone());
        assert_eq!(
            (backend.len(), backend.is_empty(), backend.domain_count()),
            (5, false, 2)
        );
        assert_eq!(backend.name(), "memory");

        let cases: &[(&str, Verdict)] = &[
            ("ann@in.example", Verdict::Accept),
            ("ANN+x@IN.example", Verdict::Accept),
            ("bob@in.example", Verdict::OptedOut),
            ("carol@in.example", Verdict::OptedOut),
            ("dave@out.example", Verdict::Accept),
            ("\"Dave\"@out.example", Verdict::Accept),
            ("erin@out.example", Verdict::OptedOut),
            ("zed@in.example", Verdict::UnknownMailbox),
            ("ann@elsewhere.example", Verdict::NotLocal),
            ("ann@", Verdict::NotLocal),
            ("in.example", Verdict::NotLocal),
            ("\"\"@in.example", Verdict::NotLocal),
            ("", Verdict::NotLocal),
        ];
        let mut scratch = Vec::new();
        for (address, expected) in cases {
            assert_eq!(
                backend.lookup_one(address.as_bytes(), &mut scratch),
                *expected,
                "{address}"
            );
            assert_eq!(
                population.verdict_of(address.as_bytes()),
                *expected,
                "{address}"
            );
        }
    }

    #[test]
    fn empty_backend_knows_nothing() {
        let backend = MemoryBackend::new(Population::default());
        assert!(backend.is_empty());
        assert_eq!(
            backend.lookup_one(b"ann@x.org", &mut Vec::new()),
            Verdict::NotLocal
        );
    }
}
