//! The generator's event loops: one single-threaded tokio runtime per thread, each with its
//! own epoll instance and timers, and the sessions of a run spread across them.
//!
//! A multi-threaded runtime shares one I/O driver and steals tasks between workers: an I/O
//! event found by one worker often wakes a task another worker must run, which costs a
//! futex wake-up and moves the task's data between cores. With a loop per thread every
//! session stays on the thread that started it, and a thread only sleeps in `epoll_wait`.
//! What that saved against the multi-threaded runtime, measured on
//! `scenarios/sessions-10k.toml`: BENCHMARKS.md, section 4 ("What was done for it before").

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tracing::warn;

/// Running event loops; dropping them stops the loops and joins their threads (a task still
/// running on one is dropped with it).
pub(crate) struct EventLoops {
    loops: Vec<EventLoop>,
}

struct EventLoop {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EventLoops {
    /// Starts `count` loops (at least one), their threads pinned to `cpus` if given. If a loop cannot start (no thread or no runtime), the run goes on with the
    /// loops that did, or on the caller's runtime if none did, and says so.
    pub(crate) fn start(count: usize, cpus: Option<CpuSet>) -> EventLoops {
        let mut loops = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            match EventLoop::start(index, cpus) {
                Ok(event_loop) => loops.push(event_loop),
                Err(error) => {
                    warn!(%error, index, "cannot start a generator event loop; going on without it");
                    break;
                }
            }
        }
        if loops.is_empty() {
            loops.push(EventLoop {
                handle: Handle::current(),
                stop: None,
                thread: None,
            });
        }
        EventLoops { loops }
    }

    /// The loop for the `n`th session or worker: round-robin.
    pub(crate) fn handle(&self, n: usize) -> &Handle {
        &self.loops[n % self.loops.len()].handle
    }

    /// How many loops run.
    pub(crate) fn len(&self) -> usize {
        self.loops.len()
    }
}

impl EventLoop {
    fn start(index: usize, cpus: Option<CpuSet>) -> io::Result<EventLoop> {
        let (handle_tx, handle_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("bulkbench-gen-{index}"))
            .spawn(move || {
                if let Some(cpus) = cpus
                    && let Err(error) = cpus.pin_current_thread()
                {
                    warn!(%error, ?cpus, "cannot pin a generator event loop; it runs unpinned");
                }
                let runtime = match Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = handle_tx.send(Err(error));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                // Tasks spawned through the handle run while this waits; a dropped sender
                // (the loops dropped) stops the loop too.
                let _ = runtime.block_on(stopped);
            })?;
        let handle = match handle_rx.recv() {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::other("the event loop thread ended at start")),
        };
        Ok(EventLoop {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A set of CPUs to pin threads to, checked and built once: pinning with it is one system
/// call that allocates nothing, so it may also run in a child between fork and exec.
#[derive(Clone, Copy)]
pub struct CpuSet {
    #[cfg(target_os = "linux")]
    set: libc::cpu_set_t,
}

impl CpuSet {
    /// The set of `cpus`; an index beyond what an affinity set holds is an error.
    #[cfg(target_os = "linux")]
    pub fn new(cpus: &[usize]) -> io::Result<CpuSet> {
        // SAFETY: cpu_set_t is plain data and all zeros is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("CPU {cpu} is beyond what an affinity set holds"),
                ));
            }
            // SAFETY: the index is below CPU_SETSIZE, checked above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        Ok(CpuSet { set })
    }

    /// Pinning is Linux-only; elsewhere threads run where the system puts them.
    #[cfg(not(target_os = "linux"))]
    pub fn new(_cpus: &[usize]) -> io::Result<CpuSet> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "CPU pinning is only implemented on Linux",
        ))
    }

    /// Restricts the calling thread to the set (Linux `sched_setaffinity`); threads it
    /// starts afterwards inherit it.
    #[cfg(target_os = "linux")]
    pub fn pin_current_thread(&self) -> io::Result<()> {
        // SAFETY: sched_setaffinity only reads the set we pass, for this thread.
        let status = unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.set)
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Never built off Linux (see `new`).
    #[cfg(not(target_os = "linux"))]
    pub fn pin_current_thread(&self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: CPU_ISSET is asked only about indices below CPU_SETSIZE.
            let cpus = (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.set) });
            f.debug_set().entries(cpus).finish()
        }
        #[cfg(not(target_os = "linux"))]
        f.debug_set().finish()
    }
}

/// The CPUs the calling thread may run on, in increasing order (Linux
/// `sched_getaffinity`); empty if they cannot be read.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes at most the size we pass into the set; CPU_ISSET is
    // asked only about indices below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Not known off Linux.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        for event_loop in &mut self.loops {
            if let Some(stop) = event_loop.stop.take() {
                let _ = stop.send(());
            }
        }
        for event_loop in &mut self.loops {
            if let Some(thread) = event_loop.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_their_own_threads_and_loops_stop_on_drop() {
        let loops = EventLoops::start(3, None);
        assert_eq!(loops.len(), 3);
        let mut names = Vec::new();
        for n in 0..6 {
            let name = loops
                .handle(n)
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            names.push(name.unwrap());
        }
        assert_eq!(
            names,
            [
                "bulkbench-gen-0",
                "bulkbench-gen-1",
                "bulkbench-gen-2",
                "bulkbench-gen-0",
                "bulkbench-gen-1",
                "bulkbench-gen-2"
            ]
        );
        // A task still pending when the loops go is dropped, not leaked or waited for.
        let pending = loops.handle(0).spawn(std::future::pending::<()>());
        drop(loops);
        assert!(pending.await.unwrap_err().is_cancelled());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pinned_loops_run_only_on_their_cpus() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty(), "this thread may run somewhere");
        let last = *allowed.last().unwrap();
        let loops = EventLoops::start(2, Some(CpuSet::new(&[last]).unwrap()));
        for n in 0..2 {
            let seen = loops
                .handle(n)
                .spawn(async { allowed_cpus() })
                .await
                .unwrap();
            assert_eq!(seen, [last]);
        }
        // The caller is untouched.
        assert_eq!(allowed_cpus(), allowed);
        assert!(CpuSet::new(&[usize::MAX]).is_err());
        assert_eq!(format!("{:?}", CpuSet::new(&[0, 3]).unwrap()), "{0, 3}");
    }
}
