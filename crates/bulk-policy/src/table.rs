//! The memory backend's table: normalized keys -> verdicts, built once, probed in batches
//! with the next keys' cache lines requested ahead of their probes.
//!
//! Why not an `FxHashMap<Box<[u8]>, Verdict>`: a probe of one there is three dependent cache
//! misses on a large table (the control bytes, the bucket holding the key's pointer, the
//! key's own allocation), and the map offers no way to ask for them before the probe
//! itself, so the misses of one batch overlap only as far as the CPU's reorder window
//! reaches.
//!
//! Here the entries (verdict, tag, length, key) lie back to back in one stream, sorted by
//! bucket: a key's hash picks its bucket, and a directory of where each bucket starts in the
//! stream says where to look. There are about half as many buckets as keys, so the directory
//! is small (4 octets a bucket: 2 MiB for a million keys) and stays in the caches; a probe
//! is then one miss to memory, for the bucket's line or two of the stream. A batch asks for
//! the directory line of key `i + 2 * AHEAD`, and for the bucket of key `i + AHEAD`, while
//! it compares key `i`: the misses of a batch overlap by design. The table never changes
//! once built, which keeps it simple: no deletion, no growth, no empty slots.

use rustc_hash::FxHasher;
use std::hash::Hasher;

use crate::Verdict;
use crate::keys::KeyBatch;

/// How many keys ahead of the one compared a batch asks for cache lines (see the module
/// docs): the directory line for the key `2 * AHEAD` ahead, its bucket's lines for the key
/// `AHEAD` ahead. Eight keys cover a cache miss to memory (some 100 ns) at the 10-20 ns a
/// key costs once its lines are in L1.
const AHEAD: usize = 8;

/// Keys per bucket the directory aims at (between this and half of it: the bucket count is
/// a power of two). Fewer buckets make the directory smaller; more keys per bucket make
/// each probe read a longer stretch of the stream.
const KEYS_PER_BUCKET: usize = 2;

/// Bits of an entry's tag byte that hold the tag (the others hold the verdict).
const TAG_MASK: u8 = 0xfc;

/// The verdict bits of an entry's tag byte, and back.
const VERDICTS: [Verdict; 4] = [
    Verdict::Accept,
    Verdict::OptedOut,
    Verdict::UnknownMailbox,
    Verdict::NotLocal,
];

fn verdict_bits(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Accept => 0,
        Verdict::OptedOut => 1,
        Verdict::UnknownMailbox => 2,
        Verdict::NotLocal => 3,
    }
}

/// The hash of a normalized key: FxHash's byte hash, then a multiply that spreads it over
/// the top bits (which pick the bucket) and the middle ones (the tag).
#[inline]
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    let h = hasher.finish();
    (h ^ (h >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The tag bits of an entry's first octet for `hash`: six bits that do not pick its bucket
/// (in any table of fewer than 2^26 buckets), so that a probe compares the key of about one
/// entry in 64 of its bucket that differ.
#[inline]
fn tag_of(hash: u64) -> u8 {
    (hash >> 32) as u8 & TAG_MASK
}

/// A table of normalized keys and their verdicts (see the module docs). Each entry is its
/// tag and verdict (one octet), its key's length (one octet: keys are at most
/// [`MAX_ADDRESS_LEN`](crate::MAX_ADDRESS_LEN) octets) and the key.
pub(crate) struct KeyTable {
    directory: Directory,
    /// `64 - log2(bucket count)`: a hash's top bits pick its bucket.
    shift: u32,
    stream: Box<[u8]>,
    len: usize,
}

/// Where each bucket starts in the stream, one more entry at the end for where the last
/// one ends: four octets a bucket, or eight for a stream of 4 GiB or more.
enum Directory {
    Narrow(Box<[u32]>),
    Wide(Box<[u64]>),
}

impl Directory {
    /// The directory for `starts`, as narrow as the stream's length allows (or wide when
    /// `wide`, which tests ask for).
    fn new(starts: Vec<usize>, wide: bool) -> Directory {
        let narrow: Option<Box<[u32]>> = if wide {
            None
        } else {
            starts.iter().map(|&s| u32::try_from(s).ok()).collect()
        };
        match narrow {
            Some(narrow) => Directory::Narrow(narrow),
            None => Directory::Wide(starts.into_iter().map(|s| s as u64).collect()),
        }
    }

    /// The stretch of the stream that holds `bucket`.
    #[inline]
    fn bucket(&self, bucket: usize) -> (usize, usize) {
        match self {
            Directory::Narrow(starts) => match starts.get(bucket..bucket + 2) {
                Some(&[start, end]) => (start as usize, end as usize),
                _ => (0, 0),
            },
            Directory::Wide(starts) => match starts.get(bucket..bucket + 2) {
                Some(&[start, end]) => (start as usize, end as usize),
                _ => (0, 0),
            },
        }
    }

    /// Where `bucket`'s directory entry lies, to fetch it ahead.
    #[inline]
    fn address(&self, bucket: usize) -> *const u8 {
        match self {
            Directory::Narrow(starts) => starts.as_ptr().wrapping_add(bucket).cast(),
            Directory::Wide(starts) => starts.as_ptr().wrapping_add(bucket).cast(),
        }
    }
}

impl KeyTable {
    /// Builds the table from `(key, verdict)` pairs.
    ///
    /// # Panics
    ///
    /// On a key longer than 255 octets: a population never holds one
    /// ([`Population`](crate::Population) refuses addresses over
    /// [`MAX_ADDRESS_LEN`](crate::MAX_ADDRESS_LEN) octets).
    pub(crate) fn build<K: AsRef<[u8]>>(
        entries: impl ExactSizeIterator<Item = (K, Verdict)>,
    ) -> Self {
        Self::build_with(entries, false)
    }

    /// [`build`](Self::build), with a wide directory whatever the stream's length if `wide`.
    fn build_with<K: AsRef<[u8]>>(
        entries: impl ExactSizeIterator<Item = (K, Verdict)>,
        wide: bool,
    ) -> Self {
        let len = entries.len();
        let bucket_count = len.div_ceil(KEYS_PER_BUCKET).max(2).next_power_of_two();
        let shift = 64 - bucket_count.trailing_zeros();
        let mut sorted: Vec<(usize, u8, K)> = entries
            .map(|(key, verdict)| {
                let hash = hash_key(key.as_ref());
                let first = tag_of(hash) | verdict_bits(verdict);
                ((hash >> shift) as usize, first, key)
            })
            .collect();
        sorted.sort_unstable_by_key(|(bucket, ..)| *bucket);
        let bytes = sorted.iter().map(|(.., key)| 2 + key.as_ref().len()).sum();
        let mut stream = Vec::with_capacity(bytes);
        let mut starts = Vec::with_capacity(bucket_count + 1);
        for (bucket, first, key) in sorted {
            let key = key.as_ref();
            starts.resize(bucket + 1, stream.len());
            stream.push(first);
            stream.push(u8::try_from(key.len()).expect("a key of at most 255 octets"));
            stream.extend_from_slice(key);
        }
        starts.resize(bucket_count + 1, stream.len());
        KeyTable {
            directory: Directory::new(starts, wide),
            shift,
            stream: stream.into_boxed_slice(),
            len,
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn bucket_of(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The verdict of `key`, whose hash is `hash`, among the entries of `stretch` (one
    /// bucket's).
    #[inline]
    fn find_in(stretch: &[u8], key: &[u8], hash: u64) -> Option<Verdict> {
        let tag = tag_of(hash);
        let mut rest = stretch;
        while let [first, len, tail @ ..] = rest {
            let (stored, next) = tail.split_at_checked(usize::from(*len))?;
            if first & TAG_MASK == tag && stored == key {
                return Some(VERDICTS[usize::from(first & !TAG_MASK)]);
            }
            rest = next;
        }
        None
    }

    /// The stream's stretch that holds `bucket`.
    #[inline]
    fn stretch(&self, (start, end): (usize, usize)) -> &[u8] {
        self.stream.get(start..end).unwrap_or_default()
    }

    /// The verdict of `key` if it is in the table: one probe, nothing fetched ahead.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Verdict> {
        let hash = hash_key(key);
        let bucket = self.directory.bucket(self.bucket_of(hash));
        Self::find_in(self.stretch(bucket), key, hash)
    }

    /// Looks up every key of `keys` and hands `answer` the verdict of each in order (`None`
    /// for a key absent from the table, or an address without a key). `hashes` is scratch
    /// space, reused across calls.
    ///
    /// Three stages run over the batch at once (see the module docs): key `i + 2 * AHEAD`
    /// has its directory entry fetched; key `i + AHEAD` has its bucket read from the
    /// directory and the bucket's lines of the stream fetched; key `i` is compared with the
    /// bucket's entries.
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
        let mut buckets = [(0, 0); AHEAD];
        for i in 0..count + 2 * AHEAD {
            // Compare first: key `i - AHEAD` takes the place of key `i - 2 * AHEAD` in
            // `buckets` just below.
            if let Some(k) = i.checked_sub(2 * AHEAD) {
                let verdict = keys.get(k).and_then(|key| {
                    Self::find_in(self.stretch(buckets[k % AHEAD]), key.key, hashes[k])
                });
                answer(k, verdict);
            }
            if let Some(j) = i.checked_sub(AHEAD)
                && let Some(&hash) = hashes.get(j)
            {
                let (start, end) = self.directory.bucket(self.bucket_of(hash));
                // A bucket's entries take a line of the stream or two, rarely more.
                let first = self.stream.as_ptr().wrapping_add(start);
                let last = self.stream.as_ptr().wrapping_add(end);
                let mut line = first.wrapping_sub(first as usize % LINE);
                while line < last {
                    prefetch(line);
                    line = line.wrapping_add(LINE);
                }
                buckets[j % AHEAD] = (start, end);
            }
            if let Some(&hash) = hashes.get(i) {
                prefetch(self.directory.address(self.bucket_of(hash)));
            }
        }
    }
}

/// A cache line's size in octets (x86-64 and most of aarch64), for fetching a bucket line
/// by line.
const LINE: usize = 64;

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
            .map(|i| (format!("user{i}@d{}.example", i % 7), VERDICTS[i % 4]))
            .collect();
        for wide in [false, true] {
            let t = KeyTable::build_with(stored.iter().map(|(k, v)| (k.as_bytes(), *v)), wide);
            assert_eq!(matches!(t.directory, Directory::Wide(_)), wide);
            assert_eq!(t.len(), 1000);
            agrees_with_single_probes(&t, &stored);
        }
    }

    fn agrees_with_single_probes(t: &KeyTable, stored: &[(String, Verdict)]) {
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
                assert_eq!(batch(t, &keys), want, "size {size} from {start}");
            }
        }
        let keys: Vec<Option<&str>> = probes.iter().map(|p| p.as_deref()).collect();
        let got = batch(t, &keys);
        for (key, verdict) in keys.iter().zip(&got) {
            let want = key.and_then(|k| stored.iter().find(|(s, _)| s == k).map(|(_, v)| *v));
            assert_eq!(*verdict, want, "{key:?}");
        }
        assert!(got.iter().filter(|v| v.is_some()).count() > 100);
        // Every stored key, with its own verdict (each of the four).
        let keys: Vec<Option<&str>> = stored.iter().map(|(k, _)| Some(k.as_str())).collect();
        let want: Vec<Option<Verdict>> = stored.iter().map(|(_, v)| Some(*v)).collect();
        assert_eq!(batch(t, &keys), want);
    }

    #[test]
    fn keys_sharing_a_bucket_and_a_tag_are_told_apart() {
        // Three keys of one length in one bucket of a two-bucket table, with one tag: only
        // their octets tell them apart.
        let shift = 63;
        let mut seen: std::collections::HashMap<(u64, u8), Vec<String>> = Default::default();
        let same = (0..10_000)
            .find_map(|i| {
                let key = format!("u{i:05}@x");
                let hash = hash_key(key.as_bytes());
                let group = seen.entry((hash >> shift, tag_of(hash))).or_default();
                group.push(key);
                (group.len() == 3).then(|| group.clone())
            })
            .expect("three keys of one bucket and tag among 10,000");
        for wide in [false, true] {
            let t = KeyTable::build_with(
                [
                    (same[0].as_bytes(), Verdict::OptedOut),
                    (same[1].as_bytes(), Verdict::Accept),
                    (b"v@x".as_slice(), Verdict::UnknownMailbox),
                ]
                .into_iter(),
                wide,
            );
            assert_eq!(t.shift, shift as u32, "two buckets");
            for (key, want) in [
                (same[0].as_str(), Some(Verdict::OptedOut)),
                (same[1].as_str(), Some(Verdict::Accept)),
                (same[2].as_str(), None),
                ("v@x", Some(Verdict::UnknownMailbox)),
                ("w@x", None),
            ] {
                assert_eq!(t.get(key.as_bytes()), want, "{key}");
                assert_eq!(batch(&t, &[Some(key)]), [want], "{key}");
            }
        }
    }

    #[test]
    fn a_table_holds_half_as_many_buckets_as_keys_and_every_entry_once() {
        for (keys, buckets) in [(0, 2), (1, 2), (4, 2), (5, 4), (1000, 512), (1025, 1024)] {
            let stored: Vec<String> = (0..keys).map(|i| format!("k{i}@x")).collect();
            let t = KeyTable::build(stored.iter().map(|k| (k.as_bytes(), Verdict::Accept)));
            let Directory::Narrow(starts) = &t.directory else {
                panic!("a short stream has a narrow directory");
            };
            assert_eq!(starts.len(), buckets + 1, "{keys} keys");
            assert_eq!(64 - t.shift, buckets.trailing_zeros());
            assert!(starts.windows(2).all(|w| w[0] <= w[1]), "buckets in order");
            let bytes: usize = stored.iter().map(|k| 2 + k.len()).sum();
            assert_eq!((starts[0], starts[buckets]), (0, bytes as u32));
            assert_eq!(t.stream.len(), bytes);
        }
    }
}
