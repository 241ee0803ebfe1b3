//! Many fst walks at once, so their cache misses overlap.
//!
//! `Map::get` walks one key from the root to its last byte, one node per byte. Near the
//! root the nodes are shared by every key and stay in cache; below, each key soon reaches
//! nodes of its own, and on a table larger than the caches nearly every such node is a
//! miss to memory. One walk cannot overlap them: each node's address is read from the
//! node before it.
//!
//! [`get_many`] keeps up to [`LANES`] walks in flight and advances them in turn, one node
//! each. When a walk learns the address of its next node it asks the CPU to fetch that
//! node's bytes, then goes on with the other walks; by the time its turn comes again the
//! node has arrived. A walk that ends gives its lane to the next key at once. The answers
//! are exactly `Map::get`'s (the tests check it key by key); only the order of the memory
//! reads changes.

use fst::raw::{CompiledAddr, Fst, Output};

/// Walks in flight. Enough to cover a miss to memory (~100 ns) with the other walks' node
/// steps (~10-20 ns each when cached), few enough that their state stays in registers and
/// L1. Measured in the `policy_backends` bench: 4 lanes gain about as much as 8 and 16.
pub(crate) const LANES: usize = 8;

/// A node to walk on from, with the output summed on the way to it: the root, or the node
/// that a key prefix leads to ([`descend`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    addr: CompiledAddr,
    out: Output,
}

impl Start {
    /// The root: walks from here look whole keys up.
    pub(crate) fn root<D: AsRef<[u8]>>(fst: &Fst<D>) -> Start {
        Start {
            addr: fst.root().addr(),
            out: Output::zero(),
        }
    }
}

/// Walks `bytes` from `from`: where every key that starts with them continues, or `None`
/// if no key does.
pub(crate) fn descend<D: AsRef<[u8]>>(fst: &Fst<D>, from: Start, bytes: &[u8]) -> Option<Start> {
    let mut at = from;
    for &byte in bytes {
        let node = fst.node(at.addr);
        let t = node.transition(node.find_input(byte)?);
        at = Start {
            addr: t.addr,
            out: at.out.cat(t.out),
        };
    }
    Some(at)
}

/// One walk in progress: the walk's index, how many of its bytes are consumed, the node
/// reached, and the output summed along the way.
#[derive(Clone, Copy)]
struct Lane {
    walk: usize,
    depth: usize,
    at: Start,
}

/// Runs every walk of `walks`: `found[i]` becomes the value of the key that `walks[i].1`
/// completes from `walks[i].0`, or `None` if the fst holds no such key. From
/// [`Start::root`], that is `Map::get(walks[i].1)`.
///
/// # Panics
///
/// If `found` is shorter than `walks` (a caller bug).
pub(crate) fn get_many<D: AsRef<[u8]>>(
    fst: &Fst<D>,
    walks: &[(Start, &[u8])],
    found: &mut [Option<u64>],
) {
    assert!(found.len() >= walks.len(), "one answer slot per walk");
    if walks.is_empty() {
        return;
    }
    let start = |walk: usize| Lane {
        walk,
        depth: 0,
        at: walks[walk].0,
    };
    let mut lanes = [start(0); LANES];
    let mut active = LANES.min(walks.len());
    for (i, lane) in lanes.iter_mut().enumerate().take(active) {
        *lane = start(i);
    }
    let mut next = active;

    while active > 0 {
        let mut i = 0;
        while i < active {
            let lane = &mut lanes[i];
            match step(fst, walks[lane.walk].1, lane) {
                Step::Moved => i += 1,
                Step::Done(value) => {
                    found[lane.walk] = value;
                    if next < walks.len() {
                        *lane = start(next);
                        next += 1;
                        i += 1;
                    } else {
                        // Fill the hole with the last lane, which this round has not
                        // advanced yet; it takes its step now.
                        active -= 1;
                        lanes[i] = lanes[active];
                    }
                }
            }
        }
    }
}

enum Step {
    /// The walk moved to its next node, which is being fetched.
    Moved,
    /// The walk ended: the key's value, or `None`.
    Done(Option<u64>),
}

/// Takes one step of `lane`'s walk of the rest of `key`: the same per-node work as `Map::get`.
#[inline(always)]
fn step<D: AsRef<[u8]>>(fst: &Fst<D>, key: &[u8], lane: &mut Lane) -> Step {
    let node = fst.node(lane.at.addr);
    let Some(&byte) = key.get(lane.depth) else {
        return Step::Done(
            node.is_final()
                .then(|| lane.at.out.cat(node.final_output()).value()),
        );
    };
    let Some(i) = node.find_input(byte) else {
        return Step::Done(None);
    };
    let t = node.transition(i);
    lane.at = Start {
        addr: t.addr,
        out: lane.at.out.cat(t.out),
    };
    lane.depth += 1;
    prefetch(fst.as_bytes(), t.addr);
    Step::Moved
}

/// Asks the CPU to bring the node at `addr` into cache. A node is read backwards from its
/// address (its state byte is the last), so the line before is fetched as well: a node
/// with a few transitions usually spans it.
#[inline(always)]
fn prefetch(bytes: &[u8], addr: CompiledAddr) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // Addresses from the fst's own transitions are inside `bytes`; a prefetch of any
        // address is harmless anyway (it never faults), so no bounds check is needed.
        let at = bytes.as_ptr().wrapping_add(addr);
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is part of the
        // target's baseline), and it only hints the cache: it reads nothing the program
        // sees and never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(at.cast());
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_sub(64).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, addr);
}

#[cfg(test)]
mod tests {
    use fst::Map;

    use super::*;

    /// Number `n` of a deterministic stream of test data (the workspace's one seeding
    /// module), then `n + 1`.
    fn draw(n: &mut u64) -> u64 {
        *n += 1;
        bulk_population::seeding::mix(7, 0, *n)
    }

    fn key(n: &mut u64) -> Vec<u8> {
        let len = (draw(n) % 12) as usize;
        // A small alphabet, so keys share prefixes and are prefixes of each other.
        (0..len).map(|_| b"ab@c."[(draw(n) % 5) as usize]).collect()
    }

    #[test]
    fn answers_as_map_get_for_every_key() {
        let mut n = 0;
        let mut stored: Vec<(Vec<u8>, u64)> = (0..5_000).map(|_| (key(&mut n), 0)).collect();
        stored.sort();
        stored.dedup_by(|a, b| a.0 == b.0);
        for (i, (_, value)) in stored.iter_mut().enumerate() {
            // Values of every width, so outputs are split across transitions.
            *value = draw(&mut n) >> (i % 64);
        }
        let map = Map::from_iter(stored.iter().map(|(k, v)| (k, *v))).unwrap();

        // Stored keys, absent keys, the empty key, repeats; every batch length from 0 to
        // a few times LANES, so lanes run dry at every point.
        let mut probes: Vec<Vec<u8>> = stored.iter().map(|(k, _)| k.clone()).collect();
        probes.extend((0..5_000).map(|_| key(&mut n)));
        probes.push(Vec::new());
        probes.extend_from_within(..100);
        let mut at = 0;
        let mut checked = 0;
        for len in (0..=4 * LANES).cycle() {
            if at >= probes.len() {
                break;
            }
            let root = Start::root(map.as_fst());
            let batch: Vec<(Start, &[u8])> = probes[at..(at + len).min(probes.len())]
                .iter()
                .map(|k| (root, k.as_slice()))
                .collect();
            let mut found = vec![Some(u64::MAX); batch.len()];
            get_many(map.as_fst(), &batch, &mut found);
            for ((_, k), got) in batch.iter().zip(&found) {
                assert_eq!(*got, map.get(k), "key {:?}", String::from_utf8_lossy(k));
                checked += 1;
            }
            at += len;
        }
        assert_eq!(checked, probes.len());
        assert!(
            stored.len() > 1_000,
            "the key space is large enough to matter"
        );
    }

    #[test]
    fn an_empty_fst_holds_nothing() {
        let map = Map::from_iter(std::iter::empty::<(&[u8], u64)>()).unwrap();
        let root = Start::root(map.as_fst());
        let walks: [(Start, &[u8]); 3] = [(root, b""), (root, b"a"), (root, b"ab")];
        let mut found = [Some(1); 3];
        get_many(map.as_fst(), &walks, &mut found);
        assert_eq!(found, [None; 3]);
        assert!(descend(map.as_fst(), root, b"a").is_none());
    }

    #[test]
    fn walks_from_a_prefix_finish_its_keys() {
        let map = Map::from_iter([
            (&b"\x02a.org\0ann"[..], 3),
            (b"\x02a.org\0bob", 0),
            (b"\x02b.org\0ann", 1 << 40),
        ])
        .unwrap();
        let fst = map.as_fst();
        let a = descend(fst, Start::root(fst), b"\x02a.org\0").unwrap();
        let b = descend(fst, Start::root(fst), b"\x02b.org\0").unwrap();
        assert!(descend(fst, Start::root(fst), b"\x02c.org\0").is_none());
        let walks: [(Start, &[u8]); 5] =
            [(a, b"ann"), (a, b"bob"), (b, b"ann"), (b, b"bob"), (a, b"")];
        let mut found = [None; 5];
        get_many(fst, &walks, &mut found);
        assert_eq!(found, [Some(3), Some(0), Some(1 << 40), None, None]);
    }
}
