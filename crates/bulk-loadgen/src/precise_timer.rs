//! A sleep with microsecond precision for the open-loop dispatchers.
//!
//! tokio's timer wheel ticks in milliseconds and its event loop waits in whole
//! milliseconds, so `sleep_until(t)` wakes at the first tick at or after `t`: on an idle
//! machine a session started that way begins on average half a millisecond late, and up to
//! a millisecond, which then shows in every open-loop connect and session latency
//! (measured from the intended start). A Linux `timerfd` armed at the absolute deadline
//! wakes the same event loop through epoll within microseconds: the kernel's high
//! resolution timer has no timer slack when armed through a timerfd.
//!
//! A wake-up still takes tens of microseconds on a virtual machine (an idle CPU waking,
//! epoll, the event loop), so the timer is armed that much before the deadline, learnt
//! from the wake-ups so far, and the rest is spent yielding to the loop's other tasks:
//! at most [`MAX_EARLY`] of yielding per session, about the wake-up's jitter on average.
//!
//! Written on `libc` (already a dependency) and tokio's `AsyncFd`: three system calls,
//! `timerfd_create`, `timerfd_settime` with `TFD_TIMER_ABSTIME`, and a `read` of its
//! expiry count, do not call for another crate.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// One re-armable timer on the current event loop. Not shared: each dispatcher has its own.
pub(crate) struct PreciseTimer {
    fd: Option<AsyncFd<OwnedFd>>,
    /// How long before a deadline the timer is armed: the time a wake-up takes (from the
    /// timer's expiry to this task running: an idle CPU's wake-up, epoll, the event loop),
    /// learnt from the wake-ups so far. The rest is spent yielding to the loop's other
    /// tasks until the deadline has passed.
    early: Duration,
}

/// Where `early` starts: a typical wake-up of an idle virtual CPU.
const FIRST_EARLY: Duration = Duration::from_micros(50);
/// The most a wake-up is anticipated by: this much yielding per session at most.
const MAX_EARLY: Duration = Duration::from_micros(200);

impl PreciseTimer {
    /// A timer registered with the current tokio runtime. Where a timerfd cannot be had
    /// (not Linux, or out of descriptors), it falls back to tokio's own timer: coarser,
    /// and the schedule lag shows by how much.
    pub(crate) fn new() -> Self {
        let fd = match Self::timerfd() {
            Ok(fd) => Some(fd),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "no timerfd: open-loop sessions start on tokio's millisecond timer"
                );
                None
            }
        };
        PreciseTimer {
            fd,
            early: FIRST_EARLY,
        }
    }

    fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: timerfd_create has no pointer arguments; a non-negative result is a new
        // descriptor that nothing else owns.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd, closed only when it is dropped), so
        // the descriptor stays open and the same for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
    }

    /// Waits until `deadline` (at once if it has passed): asleep until the learnt wake-up
    /// time before it, then yielding to the loop's other tasks until it passes.
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) {
        let wake = deadline.checked_sub(self.early).unwrap_or(deadline);
        if self.sleep_on_timer(wake).await {
            // How late the wake-up came. Lateness also holds the time the loop's other
            // tasks ran before this one was polled (load, not wake-up), so the estimate
            // falls fast (1/8 of each shorter wake-up) and rises slowly (1/32): it tracks
            // the loop's quick wake-ups, not its busy ones.
            let late = Instant::now().saturating_duration_since(wake);
            self.early = if late < self.early {
                (self.early * 7 + late) / 8
            } else {
                (self.early * 31 + late) / 32
            }
            .min(MAX_EARLY);
        } else {
            // No sleep (the next start was nearer than `early`): yielding fills the gap,
            // so let the anticipation shrink while starts come this close.
            self.early = self.early * 15 / 16;
        }
        while Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    }

    /// Sleeps until `deadline`; returns whether it slept on the timerfd (so that its
    /// lateness tells the wake-up time).
    async fn sleep_on_timer(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        let Some(ahead) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            return false;
        };
        let Some(fd) = &self.fd else {
            tokio::time::sleep_until(deadline.into()).await;
            return false;
        };
        if let Err(error) = arm(fd.get_ref(), ahead) {
            // Once, not once a session: from then on this timer is tokio's.
            tracing::warn!(%error, "timerfd_settime failed; using tokio's timer");
            self.fd = None;
            tokio::time::sleep_until(deadline.into()).await;
            return false;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                tokio::time::sleep_until(deadline.into()).await;
                return false;
            };
            let mut expirations = [0u8; 8];
            let read = ready.try_io(|fd| {
                // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(Ok(())) => {
                    // Drained: the next wait sleeps instead of failing a read first.
                    ready.clear_ready();
                    return true;
                }
                // Readiness left over from an earlier expiry: try_io cleared it; wait on.
                Err(_would_block) => {}
                Ok(Err(_)) => {
                    tokio::time::sleep_until(deadline.into()).await;
                    return false;
                }
            }
        }
    }
}

/// Arms `fd` to expire once, `ahead` from now on CLOCK_MONOTONIC (the clock behind
/// `Instant` on Linux), as an absolute time, so the time spent between reading the clock
/// and arming is not added.
fn arm(fd: &OwnedFd, ahead: Duration) -> io::Result<()> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let nanos = now.tv_nsec as u64 + u64::from(ahead.subsec_nanos());
    let value = libc::timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(ahead.as_secs() as libc::time_t)
            .saturating_add((nanos / 1_000_000_000) as libc::time_t),
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    // SAFETY: a valid descriptor, a live itimerspec, and no old value requested.
    let ok = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn wakes_at_the_deadline_not_before() {
        let mut timer = PreciseTimer::new();
        assert!(timer.fd.is_some(), "timerfd available on Linux");
        for micros in [0u64, 50, 300, 1_700, 20_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "{micros} µs: woke early");
        }
        // A deadline in the past returns at once. It lies 5 s back, so that a timer which
        // waited anyway (as long as the deadline is past, say) would overrun the bound of a
        // second, which a busy machine holding this thread for a while does not (it could
        // overrun a few milliseconds).
        let past = Instant::now() - Duration::from_secs(5);
        let started = Instant::now();
        timer.sleep_until(past).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
