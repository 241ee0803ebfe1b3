//! The memory backend's table: normalized keys -> verdicts, built once, probed in batches
//! with the next keys' cache lines requested ahead of their probes.
//!
//! Why not an `FxHashMap<Box<[u8]>, Verdict>`: a probe of one there is three dependent cache
//! misses on a large table (the control bytes, the bucket holding the key's pointer, the
//! key's own allocation), and the map offers no way to ask for the first two before the
//! probe itself, so the misses of one batch overlap only as far as the CPU's reorder window
//! reaches. Here a key's hash gives the address of its slot before any probe, so a batch
//! asks for the slot of key `i + 2 * AHEAD`, and for the stored key that slot names for key
//! `i + AHEAD`, while it compares key `i`: the misses of a batch overlap by design. The
//! table never changes once built, which keeps it simple: open addressing with linear
//! probing, no deletion, no growth.

use rustc_hash::FxHasher;
use std::hash::Hasher;

use crate::Verdict;
use crate::keys::KeyBatch;

/// How many keys ahead of the one compared a batch asks for cache lines (see the module
/// docs): the slot for the key `2 * AHEAD` ahead, its stored key for the key `AHEAD`
/// ahead. Eight keys cover a cache miss to memory (some 100 ns) at the 10-20 ns a key costs
/// once its lines are in L1.
const AHEAD: usize = 8;

/// Slot bits holding the offset of the entry in the arena (1 TiB of keys).
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// [`KeyTable::candidate`] for a key that is absent.
const NO_CANDIDATE: u64 = u64::MAX;

/// A table of normalized keys and their verdicts (see the module docs).
///
/// Layout: `slots` has a power-of-two length at least twice the number of keys (so a probe
/// for an absent key stops at an empty slot after 2 slots on average); each slot is 0
/// (empty) or the key's tag (24 bits of its hash that do not pick its home slot, the lowest
/// forced to 1 so no full slot is 0) above the offset of its entry in `arena`. An entry is
/// the verdict (one byte), the key's length (one byte: keys are at most
/// [`MAX_ADDRESS_LEN`](crate::MAX_ADDRESS_LEN) octets) and the key.
pub(crate) struct KeyTable {
    slots: Box<[u64]>,
    /// `64 - log2(slots.len())`: a hash's top bits pick its home slot.
    shift: u32,
    arena: Box<[u8]>,
    len: usize,
}

/// The verdict byte stored in an entry, and back.
const VERDICTS: [Verdict; 4] = [
    Verdict::Accept,
    Verdict::OptedOut,
    Verdict::UnknownMailbox,
    Verdict::NotLocal,
];

/// The hash of a normalized key: FxHash's byte hash, then a multiply that spreads it over
/// the top bits (which pick the slot) and the low ones (the tag).
#[inline]
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    let h = hasher.finish();
    (h ^ (h >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The tag bits of a slot for `hash`, in place (above the offset).
#[inline]
fn tag_of(hash: u64) -> u64 {
    (hash | 1) << OFFSET_BITS
}

impl KeyTable {
    /// Builds the table from `(key, verdict)` pairs.
    ///
    /// # Panics
    ///
    /// On a key longer than 255 octets, or keys totalling 1 TiB: a population never holds
    /// either ([`Population`](crate::Population) refuses addresses over
    /// [`MAX_ADDRESS_LEN`](crate::MAX_ADDRESS_LEN) octets).
    pub(crate) fn build<K: AsRef<[u8]>>(
        entries: impl ExactSizeIterator<Item = (K, Verdict)>,
    ) -> Self {
        let len = entries.len();
        let slot_count = (len.max(4) * 2).next_power_of_two();
        let shift = 64 - slot_count.trailing_zeros();
        let mut slots = vec![0u64; slot_count].into_boxed_slice();
        let mut arena = Vec::new();
        let mask = slot_count - 1;
        for (key, verdict) in entries {
            let key = key.as_ref();
            let offset = arena.len() as u64;
            assert!(offset <= OFFSET_MASK, "keys total over 1 TiB");
            arena.push(verdict as u8);
            arena.push(u8::try_from(key.len()).expect("a key of at most 255 octets"));
            arena.extend_from_slice(key);
            let hash = hash_key(key);
            let mut i = (hash >> shift) as usize;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = tag_of(hash) | offset;
        }
        KeyTable {
            slots,
            shift,
            arena: arena.into_boxed_slice(),
            len,
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The key and verdict of the entry at `offset`.
    #[inline]
    fn entry(&self, offset: u64) -> (&[u8], Verdict) {
        let offset = offset as usize;
        match self.arena.get(offset..offset + 2) {
            Some(&[verdict, len]) => (
                self.arena
                    .get(offset + 2..offset + 2 + usize::from(len))
                    .unwrap_or_default(),
                VERDICTS[usize::from(verdict & 3)],
            ),
            _ => (&[], Verdict::NotLocal),
        }
    }

    /// The verdict of `key`, whose hash is `hash`, if it is in the table; the probe starts at
    /// the slot after `from` slots of its run were already seen to be other keys'.
    #[inline]
    fn find_from(&self, key: &[u8], hash: u64, from: usize) -> Option<Verdict> {
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut i = (self.home(hash) + from) & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot & !OFFSET_MASK == tag {
                let (stored, verdict) = self.entry(slot & OFFSET_MASK);
                if stored == key {
                    return Some(verdict);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The verdict of `key` if it is in the table: one probe, nothing fetched ahead.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Verdict> {
        self.find_from(key, hash_key(key), 0)
    }

    /// The first slot of `hash`'s run whose tag matches, as its entry's offset with its
    /// distance from the home slot above it ([`NO_CANDIDATE`] when the run has no such
    /// slot: the key is absent).
    #[inline]
    fn candidate(&self, hash: u64) -> u64 {
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let home = self.home(hash);
        let mut distance = 0;
        loop {
            let slot = self.slots[(home + distance) & mask];
            if slot == 0 {
                return NO_CANDIDATE;
            }
            if slot & !OFFSET_MASK == tag {
                return (slot & OFFSET_MASK) | ((distance as u64) << OFFSET_BITS);
            }
            distance += 1;
        }
    }

    /// Looks up every key of `keys` and hands `answer` the verdict of each in order (`None`
    /// for a key absent from the table, or an address without a key). `hashes` is scratch
    /// space, reused across calls.
    ///
    /// Three stages run over the batch at once (see the module docs): key `i + 2 * AHEAD`
    /// has its home slot fetched; key `i + AHEAD` has its slot read and the entry it names
    /// fetched; key `i` is compared with that entry.
    pub(crate) fn get_batch(
        &self,
        keys: &KeyBatch,
        hashes: &mut Vec<u64>,
        mut answer: impl FnMut(usize, Option<Verdict>),
    ) {
        hashes.clear();
        hashes.extend(
            keys.iter()
                .map(|key| key.map_or(0, |key| hash_key(key.key))),
        );
        let count = hashes.len();
        let mut candidates = [NO_CANDIDATE; AHEAD];
        for i in 0..count + 2 * AHEAD {
            // Compare first: key `i - AHEAD` takes the place of key `i - 2 * AHEAD` in
            // `candidates` just below.
            if let Some(k) = i.checked_sub(2 * AHEAD) {
                let candidate = candidates[k % AHEAD];
                let verdict = match keys.get(k) {
                    Some(key) if candidate != NO_CANDIDATE => {
                        let (stored, verdict) = self.entry(candidate & OFFSET_MASK);
                        if stored == key.key {
                            Some(verdict)
                        } else {
                            // Another key with the same tag (about one probe in 2^23): go
                            // on along the run.
                            let distance = (candidate >> OFFSET_BITS) as usize;
                            self.find_from(key.key, hashes[k], distance + 1)
                        }
                    }
                    _ => None,
                };
                answer(k, verdict);
            }
            if let Some(j) = i.checked_sub(AHEAD)
                && let Some(&hash) = hashes.get(j)
            {
                let candidate = self.candidate(hash);
                if candidate != NO_CANDIDATE {
                    let offset = (candidate & OFFSET_MASK) as usize;
                    prefetch(self.arena.as_ptr().wrapping_add(offset));
                }
                candidates[j % AHEAD] = candidate;
            }
            if let Some(&hash) = hashes.get(i) {
                prefetch(self.slots.as_ptr().wrapping_add(self.home(hash)).cast());
            }
        }
    }
}

/// Asks the CPU to bring the cache line at `at` into L1. A hint only: it changes no result.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is part of the
        // target's baseline), and it only hints the cache: it reads nothing the program
        // sees and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[(&str, Verdict)]) -> KeyTable {
        KeyTable::build(keys.iter().map(|(k, v)| (k.as_bytes(), *v)))
    }

    /// The table's answers for `keys`, as `get_batch` gives them: each address is its own
    /// key (`None`: an address without one).
    fn batch(table: &KeyTable, keys: &[Option<&str>]) -> Vec<Option<Verdict>> {
        // The default normalization leaves these lower-case, untagged keys unchanged.
        let addresses: crate::AddressBatch = keys
            .iter()
            .map(|k| k.unwrap_or("no-at-sign").as_bytes())
            .collect();
        let mut key_batch = KeyBatch::default();
        key_batch.fill(crate::NormalizeConfig::default(), &addresses);
        for (key, want) in key_batch.iter().zip(keys) {
            assert_eq!(key.map(|k| k.key), want.map(str::as_bytes));
        }
        let mut out = Vec::new();
        let mut hashes = Vec::new();
        table.get_batch(&key_batch, &mut hashes, |i, v| {
            assert_eq!(i, out.len(), "answers in order");
            out.push(v);
        });
        out
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t = table(&[]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.get(b"ann@x.org"), None);
        assert_eq!(t.get(b""), None);
        assert_eq!(t.get(b"@"), None);
        assert_eq!(batch(&t, &[Some("a@x"), None]), [None, None]);
        assert_eq!(batch(&t, &[]), []);
    }

    #[test]
    fn batches_of_every_size_agree_with_single_probes() {
        let stored: Vec<(String, Verdict)> = (0..1000)
            .map(|i| (format!("user{i}@d{}.example", i % 7), VERDICTS[i % 2]))
            .collect();
        let t = KeyTable::build(stored.iter().map(|(k, v)| (k.as_bytes(), *v)));
        assert_eq!(t.len(), 1000);
        // Stored keys, absent ones, keys that are prefixes of stored ones, the empty key,
        // duplicates and addresses without a key, in every batch size around AHEAD's
        // multiples.
        let mut probes: Vec<Option<String>> = Vec::new();
        for i in 0..60 {
            probes.push(Some(format!("user{}@d{}.example", i * 13, (i * 13) % 7)));
            probes.push(Some(format!("user{i}@d9.example")));
            probes.push(Some(format!("user{}@d{}.exampl", i, i % 7)));
            probes.push(None);
            probes.push(Some("user0@d0.example".to_owned()));
        }
        for size in 0..=3 * AHEAD + 3 {
            for start in [0, 1, 5] {
                let keys: Vec<Option<&str>> = probes[start..start + size]
                    .iter()
                    .map(|p| p.as_deref())
                    .collect();
                let want: Vec<Option<Verdict>> = keys
                    .iter()
                    .map(|k| k.and_then(|k| t.get(k.as_bytes())))
                    .collect();
                assert_eq!(batch(&t, &keys), want, "size {size} from {start}");
            }
        }
        let keys: Vec<Option<&str>> = probes.iter().map(|p| p.as_deref()).collect();
        let got = batch(&t, &keys);
        for (key, verdict) in keys.iter().zip(&got) {
            let want = key.and_then(|k| stored.iter().find(|(s, _)| s == k).map(|(_, v)| *v));
            assert_eq!(*verdict, want, "{key:?}");
        }
        assert!(got.iter().filter(|v| v.is_some()).count() > 100);
    }

    #[test]
    fn keys_sharing_a_run_are_told_apart() {
        // A tiny table (4 keys, 8 slots): runs of several keys.
        let t = table(&[
            ("a@x", Verdict::Accept),
            ("b@x", Verdict::OptedOut),
            ("c@x", Verdict::Accept),
            ("d@x", Verdict::OptedOut),
        ]);
        for (key, want) in [
            ("a@x", Some(Verdict::Accept)),
            ("b@x", Some(Verdict::OptedOut)),
            ("c@x", Some(Verdict::Accept)),
            ("d@x", Some(Verdict::OptedOut)),
            ("e@x", None),
        ] {
            assert_eq!(t.get(key.as_bytes()), want, "{key}");
            assert_eq!(
                t.find_from(key.as_bytes(), hash_key(key.as_bytes()), 0),
                want
            );
        }
    }
}
