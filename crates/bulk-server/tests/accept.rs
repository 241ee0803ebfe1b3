//! The accept loop: one turn empties the listen queue. Real TCP over loopback.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;

use bulk_policy::{MemoryBackend, NormalizeConfig, Population};
use bulk_server::{ServerConfig, StatsSnapshot};

/// Connections waiting in the accept queue when the server starts: many times tokio's
/// cooperative budget (128 operations per turn), and below the backlog, so the kernel
/// refuses none of them.
const QUEUED: usize = 900;
const BACKLOG: u32 = 1024;

/// Opens `count` connections to `addr`; the handshake completes in the kernel, so they
/// wait in the accept queue until the server takes them.
fn connect_many(addr: SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    (0..count)
        .map(|_| std::net::TcpStream::connect_timeout(&addr, common::WAIT).expect("connect"))
        .collect()
}

/// The server runs on a single-threaded runtime (one CPU's worth, as `bench` pins it), so
/// the accept loop and everything else on it take turns; `probe` runs on the same runtime
/// whenever the accept loop lets others run.
fn serve_one_thread<F, T>(
    runtime: &tokio::runtime::Runtime,
    listener: StdListener,
    probe: F,
) -> (StatsSnapshot, T)
where
    F: Future<Output = T>,
{
    let population = Population::parse(common::POPULATION.as_bytes(), NormalizeConfig::default())
        .expect("test population parses");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let policy = Arc::new(MemoryBackend::new(population));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = bulk_server::run(listener, ServerConfig::default(), policy, async {
            let _ = stopped.await;
        });
        let probed = async {
            let seen = probe.await;
            let _ = stop.send(());
            seen
        };
        let (stats, seen) = tokio::join!(server, probed);
        (stats.expect("server runs"), seen)
    })
}

/// After the accept loop's first turn, nothing is left in the accept queue: a turn takes
/// every connection waiting, not 128 of them (tokio's cooperative budget) before the
/// loop waits behind every other runnable task while the queue fills up. Ordering only,
/// no clock: the probe looks at the queue each time the loop yields.
#[test]
fn one_turn_of_the_accept_loop_empties_the_queue() {
    bulk_server::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = {
        let _inside = runtime.enter();
        bulk_server::bind("127.0.0.1:0".parse().unwrap(), BACKLOG)
            .expect("bind")
            .into_std()
            .expect("std listener")
    };
    let addr = listener.local_addr().unwrap();
    let watched = listener.try_clone().expect("a second descriptor");
    let clients = connect_many(addr, QUEUED);
    let queue = bulk_server::listen_queue(&watched).expect("Linux reports the queue");
    assert_eq!(queue.queued as usize, QUEUED, "all wait in the queue");
    let probe = async {
        // Bounded: the server takes the first connection within a few turns.
        for _ in 0..100_000 {
            let queued = bulk_server::listen_queue(&watched).expect("queue").queued as usize;
            if queued < QUEUED {
                return Some(queued);
            }
            tokio::task::yield_now().await;
        }
        None
    };
    let (stats, left) = serve_one_thread(&runtime, listener, probe);
    assert_eq!(
        left,
        Some(0),
        "connections left in the queue after the first turn"
    );
    assert_eq!(stats.largest_accept_turn, QUEUED as u64);
    assert_eq!(stats.accept_queue_peak, QUEUED as u64);
    assert_eq!(stats.accept_queue_full, 0);
    assert_eq!(stats.connections, QUEUED as u64);
    drop(clients);
}
