//! Pinning the server and the generator to CPUs of their own, and the CPU time each side
//! spends in a run's measurement window.

use std::time::Duration;

use bulk_loadgen::CpuSet;
use bulk_report::summary::{CpuTimes, PinnedCpuTimes};
use tracing::warn;

use crate::sys;

/// The processes whose CPU a run measures besides its own: the server it started (or an
/// external server's processes, when named), and the store's processes when the store runs
/// beside it (started for the run).
#[derive(Clone, Debug, Default)]
pub(super) struct Watched {
    pub(super) server: Option<u32>,
    /// Roots of an external server's process trees (Postfix's master and its smtpd
    /// processes, a policy server beside it), measured as the server.
    pub(super) server_tree: Vec<u32>,
    /// Roots of the store's process trees (a Redis server each, a PostgreSQL postmaster).
    pub(super) store: Vec<u32>,
}

/// CPU time of the server and the store (if any) and of this process at one instant, and
/// of each side's CPUs when they are pinned.
#[derive(Clone, Copy)]
pub(super) struct CpuSample {
    pub(super) server: Option<Duration>,
    pub(super) store: Option<Duration>,
    pub(super) generator: Duration,
    /// Server's CPUs, generator's CPUs.
    sets: Option<[CpuTimes; 2]>,
}

pub(super) fn sample_cpu(watched: &Watched, split: Option<&CpuSplit>) -> CpuSample {
    CpuSample {
        server: match watched.server {
            Some(pid) => sys::cpu_time(Some(pid)),
            None if !watched.server_tree.is_empty() => sys::tree_cpu_time(&watched.server_tree),
            None => None,
        },
        store: (!watched.store.is_empty())
            .then(|| sys::tree_cpu_time(&watched.store))
            .flatten(),
        generator: sys::cpu_time(None).unwrap_or_default(),
        sets: split.and_then(|s| sys::cpu_set_times([&s.server, &s.generator])),
    }
}

/// Time on each side's CPUs between two samples.
pub(super) fn pinned_times(
    split: &CpuSplit,
    start: &CpuSample,
    end: &CpuSample,
) -> Option<PinnedCpuTimes> {
    let ([server_start, generator_start], [server_end, generator_end]) = (start.sets?, end.sets?);
    Some(PinnedCpuTimes {
        server: (split.server.clone(), server_end.since(&server_start)),
        generator: (
            split.generator.clone(),
            generator_end.since(&generator_start),
        ),
    })
}

/// Seconds from `start` to `end`, when both are known.
pub(super) fn cpu_delta(start: Option<Duration>, end: Option<Duration>) -> Option<f64> {
    Some(end?.saturating_sub(start?).as_secs_f64())
}

/// Which CPUs the server and the generator run on, when `bench` pins them.
///
/// Pinned by default: on shared cores, when both processes are busy the scheduler splits
/// the CPUs between them evenly, and each one's CPU time then shows its share, not its
/// work (seen here on two cores: server and generator CPU seconds equal to the hundredth,
/// run after run). On CPUs of their own, each uses what its work needs, and the side that
/// limits the rate shows it by using all of its CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CpuSplit {
    pub(super) server: Vec<usize>,
    pub(super) generator: Vec<usize>,
}

/// A [`CpuSplit`] ready to pin with: both sets built, and tried.
pub(super) struct Pinning {
    pub(super) split: CpuSplit,
    pub(super) server: CpuSet,
    pub(super) generator: CpuSet,
}

impl CpuSplit {
    /// The first half of `cpus` (rounded up) for the server, the rest for the generator;
    /// `None` with fewer than two.
    pub(super) fn halves(cpus: &[usize]) -> Option<CpuSplit> {
        if cpus.len() < 2 {
            return None;
        }
        let (server, generator) = cpus.split_at(cpus.len().div_ceil(2));
        Some(CpuSplit {
            server: server.to_vec(),
            generator: generator.to_vec(),
        })
    }

    /// The sets to pin with, once a short-lived thread has been pinned to each, so that a
    /// report never claims a pinning that did not happen; if that fails, says why.
    pub(super) fn pinning(self) -> Option<Pinning> {
        let sets = CpuSet::new(&self.server).and_then(|server| {
            let generator = CpuSet::new(&self.generator)?;
            std::thread::spawn(move || {
                server.pin_current_thread()?;
                generator.pin_current_thread()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the trial thread panicked")))?;
            Ok((server, generator))
        });
        match sets {
            Ok((server, generator)) => Some(Pinning {
                split: self,
                server,
                generator,
            }),
            Err(error) => {
                warn!(%error, "cannot pin to CPUs; server and generator share them");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_split_in_halves_with_the_odd_one_to_the_server() {
        assert_eq!(CpuSplit::halves(&[]), None);
        assert_eq!(CpuSplit::halves(&[3]), None);
        let split = |server: &[usize], generator: &[usize]| CpuSplit {
            server: server.to_vec(),
            generator: generator.to_vec(),
        };
        assert_eq!(CpuSplit::halves(&[0, 1]), Some(split(&[0], &[1])));
        assert_eq!(CpuSplit::halves(&[2, 5, 7]), Some(split(&[2, 5], &[7])));
        assert_eq!(
            CpuSplit::halves(&[0, 1, 2, 3]),
            Some(split(&[0, 1], &[2, 3]))
        );
    }
}
