//! The lookup keys of one batch: every address normalized into one arena, reused per
//! thread, for backends that look keys up in two passes.
//!
//! Normalizing every address first and probing afterwards keeps the probes back to back, so
//! the CPU overlaps their cache misses (or an LMDB read transaction, or an fst walk, covers
//! them all) instead of interleaving them with normalization work.

use std::cell::RefCell;

use crate::AddressBatch;
use crate::address::NormalizeConfig;

/// One normalized key: `local@domain`, and where its '@' is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// The whole key.
    pub key: &'a [u8],
    /// Index of the '@' that splits it.
    pub at: usize,
}

impl<'a> Key<'a> {
    /// The local part, before the '@'.
    pub fn local(&self) -> &'a [u8] {
        &self.key[..self.at]
    }

    /// The domain, after the '@'.
    pub fn domain(&self) -> &'a [u8] {
        &self.key[self.at + 1..]
    }

    /// The domain with its '@': `@domain`.
    pub fn at_domain(&self) -> &'a [u8] {
        &self.key[self.at..]
    }
}

/// The keys of one batch (see the module docs).
#[derive(Debug, Default)]
pub struct KeyBatch {
    bytes: Vec<u8>,
    /// Per address: (start, end, index of '@') in `bytes`, or None if it did not normalize.
    spans: Vec<Option<(u32, u32, u32)>>,
}

thread_local! {
    static KEYS: RefCell<KeyBatch> = RefCell::new(KeyBatch::default());
}

impl KeyBatch {
    /// Runs `f` with this thread's key batch, so a lookup allocates nothing once warm.
    /// Not reentrant: `f` must not call it again.
    pub fn with_thread_local<R>(f: impl FnOnce(&mut KeyBatch) -> R) -> R {
        KEYS.with_borrow_mut(f)
    }

    /// Replaces the content with the keys of `batch`, normalized with `normalize`. An
    /// address pushed as normal ([`AddressBatch::push_normal`]) is copied as its own key
    /// where `normalize` would leave it as it is, without the folding pass and the
    /// delimiter search.
    pub fn fill(&mut self, normalize: NormalizeConfig, batch: &AddressBatch) {
        self.bytes.clear();
        self.spans.clear();
        self.spans.reserve(batch.len());
        let keeps_normal = normalize.keeps_normal();
        for (address, normal) in batch.iter_marked() {
            let start = self.bytes.len();
            let own_key = normal && keeps_normal;
            let key = match own_key.then(|| NormalizeConfig::own_key(address)).flatten() {
                Some(at) => {
                    self.bytes.extend_from_slice(address);
                    Ok(at)
                }
                None => normalize.normalize_append(address, &mut self.bytes),
            };
            let span = match key {
                // An address is at most a line long and a batch at most a read buffer:
                // offsets fit u32 by far; one that did not answers as not normalizable.
                Ok(at) => u32::try_from(start)
                    .ok()
                    .zip(u32::try_from(self.bytes.len()).ok())
                    .and_then(|(s, e)| Some((s, e, s.checked_add(u32::try_from(at).ok()?)?))),
                Err(_) => None,
            };
            self.spans.push(span);
        }
    }

    /// The key of address `i`: `None` past the end or for an address that does not
    /// normalize.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Key<'_>> {
        let (start, end, at) = (*self.spans.get(i)?)?;
        Some(Key {
            key: self.bytes.get(start as usize..end as usize)?,
            at: (at - start) as usize,
        })
    }

    /// Number of addresses (keys and addresses without one).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch holds no address.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The keys in batch order; `None` for an address that does not normalize (which every
    /// backend answers `NotLocal`).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<Key<'_>>> + '_ {
        self.spans.iter().map(|span| {
            span.map(|(start, end, at)| Key {
                key: &self.bytes[start as usize..end as usize],
                at: (at - start) as usize,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The keys of `addresses` with their '@', pushed as normal or not.
    fn keys_of(
        config: NormalizeConfig,
        addresses: &[Vec<u8>],
        normal: bool,
    ) -> Vec<Option<(Vec<u8>, usize)>> {
        let mut batch = AddressBatch::new();
        for address in addresses {
            if normal {
                batch.push_normal(address);
            } else {
                batch.push(address);
            }
        }
        let mut keys = KeyBatch::default();
        keys.fill(config, &batch);
        keys.iter()
            .map(|k| k.map(|k| (k.key.to_vec(), k.at)))
            .collect()
    }

    proptest! {
        /// An address with no upper-case letter and no `+`, pushed as normal, gets the key
        /// normalization gives it, under every configuration: quoted local parts, several
        /// '@', empty parts and other delimiters included.
        #[test]
        fn normal_addresses_get_the_keys_normalization_gives(
            addresses in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![
                        Just(b'@'), Just(b'"'), Just(b'\\'), Just(b'-'), Just(b'.'),
                        b'a'..=b'e', Just(b'x'), any::<u8>(),
                    ]
                    .prop_filter("normal", |b| !b.is_ascii_uppercase() && *b != b'+'),
                    0..12,
                ),
                0..6,
            ),
            fold_local_case in any::<bool>(),
            recipient_delimiter in prop_oneof![Just(None), Just(Some(b'+')), Just(Some(b'-')), Just(Some(b'x'))],
        ) {
            let config = NormalizeConfig { fold_local_case, recipient_delimiter };
            prop_assert_eq!(keys_of(config, &addresses, true), keys_of(config, &addresses, false));
        }
    }

    #[test]
    fn keys_in_order_with_failures_in_place() {
        let batch: AddressBatch = [&b"Ann+x@Example.ORG"[..], b"no-at-sign", b"\"b c\"@x.org"]
            .into_iter()
            .collect();
        let mut keys = KeyBatch::default();
        keys.fill(NormalizeConfig::default(), &batch);
        let got: Vec<Option<(Vec<u8>, Vec<u8>)>> = keys
            .iter()
            .map(|k| k.map(|k| (k.key.to_vec(), k.at_domain().to_vec())))
            .collect();
        assert_eq!(
            got,
            [
                Some((b"ann@example.org".to_vec(), b"@example.org".to_vec())),
                None,
                Some((b"b c@x.org".to_vec(), b"@x.org".to_vec())),
            ]
        );
        assert_eq!((keys.len(), keys.is_empty()), (3, false));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(keys.get(i), key);
        }
        assert_eq!(keys.get(3), None);
        let first = keys.iter().next().flatten().unwrap();
        assert_eq!(
            (first.local(), first.domain()),
            (&b"ann"[..], &b"example.org"[..])
        );
        // Refilling replaces.
        keys.fill(NormalizeConfig::default(), &AddressBatch::new());
        assert_eq!(keys.iter().len(), 0);
        assert!(keys.is_empty());
    }
}
