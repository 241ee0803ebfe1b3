//! Harvest-resistant delays, counted per client address across its sessions.
//!
//! In harvest-resistant mode unknown and opted-out mailboxes get the same reply, so the
//! only thing that could tell them apart is time: a delay that starts when a client has
//! named too many unknown mailboxes. Such a delay must not be decided by the RCPT it
//! delays, nor reset when the client reconnects.
//!
//! So time is cut into windows of fixed length, the same for every client (`window`,
//! 10 minutes by default). During a window, a client address's RCPTs are delayed if and
//! only if it named more than `unknown_threshold` unknown mailboxes in the window before;
//! the decision is taken once per window, before any of its verdicts are known. A client
//! therefore observes one bit per window per address (delayed or not), whatever it sends:
//! it can tell at most one candidate address apart per window, `3600 / window` per hour
//! (6 with the defaults). A sender whose unknown mailboxes stay within the threshold per
//! window is never delayed, whatever share of its recipients refuse bulk mail.
//!
//! The table holds one entry per client address seen in the last two windows, at most
//! `max_clients`: entries older than that decide nothing and are dropped first; past the
//! limit, the entry with the fewest unknown mailboxes goes (a flood of fresh addresses
//! cannot evict a prober's count before those of quieter clients).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How harvest-resistant mode delays a client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HarvestLimits {
    /// The length of a counting window.
    pub window: Duration,
    /// Unknown mailboxes a client address may name in a window without being delayed in
    /// the next one.
    pub unknown_threshold: u32,
    /// Added per RCPT looked up while a client address is delayed.
    pub delay: Duration,
    /// Client addresses the table holds at most.
    pub max_clients: usize,
}

impl Default for HarvestLimits {
    fn default() -> Self {
        HarvestLimits {
            window: Duration::from_secs(600),
            unknown_threshold: 100,
            delay: Duration::from_secs(1),
            max_clients: 100_000,
        }
    }
}

/// One client address's counts.
#[derive(Clone, Copy, Debug)]
struct Client {
    /// The window `unknown` counts for.
    window: u64,
    /// Unknown mailboxes named in that window.
    unknown: u32,
    /// Whether that window delays this client (decided when it began).
    delayed: bool,
}

/// The per-address counts of one server.
pub(crate) struct HarvestTable {
    limits: HarvestLimits,
    /// The clock windows count from.
    epoch: Instant,
    clients: Mutex<HashMap<IpAddr, Client>>,
}

impl HarvestTable {
    pub(crate) fn new(limits: HarvestLimits) -> HarvestTable {
        HarvestTable {
            limits,
            epoch: Instant::now(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The window `now` falls in.
    fn window_of(&self, now: Instant) -> u64 {
        let window = self.limits.window.as_nanos().max(1);
        (now.saturating_duration_since(self.epoch).as_nanos() / window) as u64
    }

    /// The delay for a batch of `rcpts` looked-up RCPTs from `client` at `now`: decided by
    /// the window before this one, never by the verdicts of this batch.
    pub(crate) fn delay(&self, client: IpAddr, rcpts: usize, now: Instant) -> Duration {
        let window = self.window_of(now);
        let mut clients = self.lock();
        let delayed = clients
            .get_mut(&client)
            .is_some_and(|entry| roll(entry, window, self.limits.unknown_threshold).delayed);
        if delayed {
            self.limits.delay * u32::try_from(rcpts).unwrap_or(u32::MAX)
        } else {
            Duration::ZERO
        }
    }

    /// Counts `unknown` unknown mailboxes named by `client` at `now`.
    pub(crate) fn charge(&self, client: IpAddr, unknown: u32, now: Instant) {
        if unknown == 0 {
            return;
        }
        let window = self.window_of(now);
        let threshold = self.limits.unknown_threshold;
        let mut clients = self.lock();
        if !clients.contains_key(&client) && clients.len() >= self.limits.max_clients {
            evict(&mut clients, window);
        }
        let entry = clients.entry(client).or_insert(Client {
            window,
            unknown: 0,
            delayed: false,
        });
        let entry = roll(entry, window, threshold);
        entry.unknown = entry.unknown.saturating_add(unknown);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Client>> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Brings `entry` to `window`: a new window is delayed when the one just before it
/// counted more unknown mailboxes than the threshold, and starts counting from zero.
fn roll(entry: &mut Client, window: u64, threshold: u32) -> &mut Client {
    if entry.window != window {
        entry.delayed = entry.window + 1 == window && entry.unknown > threshold;
        entry.window = window;
        entry.unknown = 0;
    }
    entry
}

/// Makes room for one client: entries of windows that no longer decide anything go, and
/// if none does, the one with the fewest unknown mailboxes.
fn evict(clients: &mut HashMap<IpAddr, Client>, window: u64) {
    let before = clients.len();
    clients.retain(|_, entry| entry.window + 1 >= window);
    if clients.len() < before {
        return;
    }
    if let Some(quietest) = clients
        .iter()
        .min_by_key(|(_, entry)| (entry.unknown, entry.delayed))
        .map(|(address, _)| *address)
    {
        clients.remove(&quietest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(threshold: u32) -> HarvestTable {
        HarvestTable::new(HarvestLimits {
            window: Duration::from_secs(10),
            unknown_threshold: threshold,
            delay: Duration::from_millis(100),
            max_clients: 3,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_window_over_the_threshold_delays_every_rcpt_of_the_next_one_only() {
        let t = table(3);
        let start = t.epoch;
        let at = |secs: u64| start + Duration::from_secs(secs);
        // Window 0: 4 unknowns, over the threshold of 3; nothing delayed in it, whatever
        // was named in it.
        t.charge(ip(1), 3, at(1));
        assert_eq!(t.delay(ip(1), 5, at(2)), Duration::ZERO);
        t.charge(ip(1), 1, at(3));
        assert_eq!(t.delay(ip(1), 5, at(9)), Duration::ZERO);
        // Window 1: every batch delayed, by its number of RCPTs.
        assert_eq!(t.delay(ip(1), 5, at(10)), Duration::from_millis(500));
        assert_eq!(t.delay(ip(1), 1, at(19)), Duration::from_millis(100));
        // Another address is not.
        assert_eq!(t.delay(ip(2), 5, at(12)), Duration::ZERO);
        // Window 2: window 1 named none: not delayed; nor after a silent gap.
        assert_eq!(t.delay(ip(1), 5, at(20)), Duration::ZERO);
        t.charge(ip(1), 9, at(25));
        assert_eq!(t.delay(ip(1), 1, at(45)), Duration::ZERO);
    }

    #[test]
    fn at_the_threshold_nothing_is_delayed() {
        let t = table(3);
        let start = t.epoch;
        t.charge(ip(1), 3, start);
        assert_eq!(
            t.delay(ip(1), 1, start + Duration::from_secs(10)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_counts_that_matter() {
        let t = table(3);
        let start = t.epoch;
        t.charge(ip(1), 50, start); // a prober
        t.charge(ip(2), 1, start);
        t.charge(ip(3), 2, start);
        // Full: a new address evicts the quietest, never the prober.
        t.charge(ip(4), 1, start);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.delay(ip(1), 1, start + Duration::from_secs(10)),
            Duration::from_millis(100)
        );
        // Two windows on, old entries decide nothing and are the first to go.
        for last in 10..20 {
            t.charge(ip(last), 1, start + Duration::from_secs(30));
        }
        assert_eq!(t.len(), 3);
    }
}
