//! Ctrl-C, for every command that runs a workload: the first SIGINT stops what is running
//! and lets it report; a second one quits at once.

use tokio::signal::unix::SignalKind;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Ctrl-C for the whole command, cancelled at the first SIGINT: each run's cancel token is
/// its child, so the run in progress stops and reports what it measured, a run that has
/// not started yet stops at once, and `compare` stops between runs. Before
/// [`watch`] a SIGINT ends the process as usual.
pub(crate) fn token() -> &'static CancellationToken {
    static INTERRUPT: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    INTERRUPT.get_or_init(CancellationToken::new)
}

/// From now on a SIGINT cancels [`token`] instead of ending the process; a second one
/// ends it at once (the `bench` server child gets its SIGTERM from the kernel, see
/// `sys::tie_child_to_this_process`). The signal is watched on a thread of its own, so a
/// Ctrl-C is seen between runs too, while a store is built or the server starts.
pub(crate) fn watch() {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| {
        let watcher = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build();
        let Ok(watcher) = watcher else {
            warn!("cannot watch for Ctrl-C; it ends the process without a report");
            return;
        };
        // Registered before this returns, so no SIGINT falls between two handlers.
        let first =
            watcher.block_on(async { tokio::signal::unix::signal(SignalKind::interrupt()) });
        let Ok(mut sigint) = first else {
            warn!("cannot watch for Ctrl-C; it ends the process without a report");
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("bulkbench-sigint".into())
            .spawn(move || {
                watcher.block_on(async {
                    sigint.recv().await;
                    warn!(
                        "interrupted: stopping; what was measured is still reported \
                         (Ctrl-C again to quit at once)"
                    );
                    token().cancel();
                    sigint.recv().await;
                    warn!("interrupted again: quitting without a report");
                    std::process::exit(130);
                })
            });
        if let Err(error) = spawned {
            warn!(%error, "cannot watch for Ctrl-C; it ends the process without a report");
        }
    });
}
