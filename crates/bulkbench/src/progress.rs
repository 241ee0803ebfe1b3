//! The live progress bar of a run: sessions done, RCPT/s over the last second, errors and
//! mismatches, on standard error (hidden when it is not a terminal or with --quiet).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bulk_loadgen::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    done: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

/// What a run's bar fills up with.
#[derive(Clone, Copy, Debug)]
pub enum Total {
    /// Sessions of a workload sized in sessions.
    Sessions(u64),
    /// The time of a workload sized in time.
    Time(Duration),
}

impl Bar {
    pub fn start(total: Total, progress: Arc<Progress>, quiet: bool) -> Bar {
        let (length, template) = match total {
            Total::Sessions(n) => (
                n,
                "{elapsed_precise} [{bar:30}] {pos}/{len} sessions  {msg}",
            ),
            Total::Time(d) => (
                d.as_millis() as u64,
                "{elapsed_precise} [{bar:30}] {prefix} sessions  {msg}",
            ),
        };
        let bar = ProgressBar::with_draw_target(
            Some(length),
            if quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let ticker = std::thread::spawn(move || {
            let mut last = (Instant::now(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = Instant::now();
                let rcpts = progress.rcpts.load(Ordering::Relaxed);
                let elapsed = now.duration_since(last.0).as_secs_f64();
                if elapsed >= 1.0 {
                    let rate = (rcpts - last.1) as f64 / elapsed;
                    last = (now, rcpts);
                    bar.set_message(format!(
                        "{rate:>8.0} RCPT/s  in flight {}  errors {}  mismatches {}",
                        progress.in_flight.load(Ordering::Relaxed),
                        progress.errors.load(Ordering::Relaxed),
                        progress.mismatches.load(Ordering::Relaxed),
                    ));
                }
                let sessions = progress.sessions.load(Ordering::Relaxed);
                match total {
                    Total::Sessions(_) => bar.set_position(sessions),
                    Total::Time(_) => {
                        bar.set_position(started.elapsed().as_millis() as u64);
                        bar.set_prefix(sessions.to_string());
                    }
                }
            }
            bar.finish_and_clear();
        });
        Bar {
            done,
            ticker: Some(ticker),
        }
    }

    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Progress of a job counted in steps (rendering plots, generating mailboxes) or of one
/// that counts nothing (a spinner), on standard error. Cleared when finished or dropped
/// (an error half-way leaves no stale bar above its message).
pub struct Steps {
    bar: ProgressBar,
}

impl Steps {
    fn target(quiet: bool) -> ProgressDrawTarget {
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        }
    }

    /// A spinner from the start: `what`, and the time it has taken.
    pub fn spinner(what: &str, quiet: bool) -> Steps {
        let steps = Steps {
            bar: ProgressBar::with_draw_target(None, Self::target(quiet)),
        };
        steps.waiting(what);
        steps
    }

    pub fn start(what: &str, quiet: bool) -> Steps {
        let bar = ProgressBar::with_draw_target(Some(0), Self::target(quiet));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Steps { bar }
    }

    /// A bar counting to `total`, for a job that reports `done` with [`at`](Self::at).
    pub fn counting(what: &str, total: u64, quiet: bool) -> Steps {
        let steps = Steps::start(what, quiet);
        steps.bar.set_length(total);
        steps
    }

    pub fn at(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn set(&self, done: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }

    /// A step that counts nothing: a spinner, the message and the time it has taken.
    pub fn waiting(&self, what: &str) {
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        self.bar.set_message(what.to_owned());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
