//! `bench --ceiling`: this machine's canned-reply ceiling. After the measured run, the same
//! workload runs against `bulkbench serve --backend canned:SHARE` (the same server, flags
//! and pinning, every RCPT answered by a fixed rule without any lookup), and the measured
//! run's summary records that arm's figures and its own as ratios to them. The canned
//! arm's replies come from its rule, not the population, so it runs with `--verify off`.

use bulk_policy::{AcceptShare, Verdict};
use bulk_population::{Kind, SessionSpec, Workload};
use bulk_report::Summary;
use bulk_report::summary::Ceiling;
use rayon::prelude::*;
use tracing::{info, warn};

use crate::run::{self, Prepared, RunArgs, RunTarget, VerifyArg};

/// The share of RCPTs the canned rule accepts, so that the canned arm's reply mix (and so
/// the DATA that follows) resembles the measured run's: of the RCPTs of BULK transactions
/// that reach the backend (within each transaction's recipient limit: later ones get `452`
/// without a lookup), those the workload expects accepted, over the first `sessions`
/// sessions of the workload (those the measured run started: a closed loop sized in time
/// draws them by index). MAIL transactions do not count: there the session answers `250`
/// to an opted-out verdict, so the rule's refusals are accepted anyway. A workload without
/// a BULK RCPT gets [`AcceptShare::ALL`].
pub(crate) fn accept_share(workload: &Workload, sessions: u64, max_recipients: u32) -> AcceptShare {
    let (accepted, total) = (0..sessions)
        .into_par_iter()
        .map(|k| {
            workload
                .session(k)
                .map_or((0, 0), |s| bulk_accepts(s, max_recipients))
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    AcceptShare::from_ratio(accepted, total).unwrap_or(AcceptShare::ALL)
}

/// (expected accepted, all) RCPTs of a session's BULK transactions within the limit.
fn bulk_accepts(session: &SessionSpec, max_recipients: u32) -> (u64, u64) {
    let (mut accepted, mut total) = (0u64, 0u64);
    for transaction in session.transactions.iter().filter(|t| t.kind == Kind::Bulk) {
        for recipient in transaction.recipients.iter().take(max_recipients as usize) {
            total += 1;
            accepted += u64::from(recipient.expected(Kind::Bulk) == Verdict::Accept);
        }
    }
    (accepted, total)
}

/// Runs the canned arm and records the ceiling in `measured` (the measured run's summary;
/// it started the first `drawn` sessions of the workload). Skipped, with a warning, when
/// the measured run was interrupted: the user asked to stop.
pub(crate) fn measure_into(
    measured: &mut Summary,
    drawn: u64,
    args: &RunArgs,
    prepared: &Prepared,
) -> anyhow::Result<()> {
    if measured.window.interrupted || crate::interrupt::token().is_cancelled() {
        warn!("interrupted: the ceiling was not measured");
        return Ok(());
    }
    let share = accept_share(
        &prepared.workload,
        drawn,
        prepared.scenario.server.max_recipients.get(),
    );
    let backend = format!("canned:{share}");
    info!(
        backend,
        "ceiling: the same workload against `serve --backend {backend}` (replies not verified)"
    );
    let canned_args = RunArgs {
        verify: VerifyArg::Off,
        ..args.clone()
    };
    let (canned, _) = run::once(
        &canned_args,
        prepared,
        &RunTarget::Canned(share),
        "bench",
        None,
    )?;
    let ceiling = Ceiling::new(backend, share.get(), measured, &canned);
    info!(
        ceiling_rcpt_per_sec = ceiling.rcpt_per_sec,
        share_of_ceiling = ceiling.ratios.rcpt_per_sec,
        "ceiling measured"
    );
    measured.ceiling = Some(ceiling);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulk_population::{Recipient, Transaction};

    fn transaction(kind: Kind, verdicts: &[Verdict]) -> Transaction {
        Transaction {
            kind,
            sender: "news@shop.test".into(),
            recipients: verdicts
                .iter()
                .enumerate()
                .map(|(i, verdict)| Recipient {
                    address: format!("r{i}@example.org"),
                    verdict: *verdict,
                })
                .collect(),
            message_size: 100,
        }
    }

    fn session(index: u64, transactions: Vec<Transaction>) -> SessionSpec {
        SessionSpec {
            index,
            start_offset_us: 0,
            pipelining: true,
            transactions,
            starttls: false,
        }
    }

    fn workload(sessions: Vec<SessionSpec>) -> Workload {
        Workload::from_sessions("t".into(), 1, None, sessions)
    }

    fn share(w: &Workload, limit: u32) -> AcceptShare {
        accept_share(w, w.sessions.len() as u64, limit)
    }

    #[test]
    fn the_share_is_the_expected_accepts_of_bulk_rcpts_within_the_limit() {
        use Verdict::{Accept, NotLocal, OptedOut, UnknownMailbox};
        let bulk = |verdicts| transaction(Kind::Bulk, verdicts);
        let w = workload(vec![
            session(0, vec![bulk(&[Accept, OptedOut, UnknownMailbox, NotLocal])]),
            session(
                1,
                vec![
                    bulk(&[Accept, Accept, OptedOut, Accept]),
                    // MAIL: opted-out recipients are accepted there whatever the rule says.
                    transaction(Kind::Mail, &[OptedOut, OptedOut, OptedOut]),
                    bulk(&[OptedOut, Accept]),
                ],
            ),
        ]);
        assert_eq!(share(&w, 1000), AcceptShare::from_ratio(5, 10).unwrap());
        // With a limit of 2 per transaction, the RCPTs past it never reach the backend.
        assert_eq!(share(&w, 2), AcceptShare::from_ratio(4, 6).unwrap());
        // Only the sessions the measured run started count.
        assert_eq!(
            accept_share(&w, 1, 1000),
            AcceptShare::from_ratio(1, 4).unwrap()
        );
        let mail = workload(vec![session(0, vec![transaction(Kind::Mail, &[Accept])])]);
        assert_eq!(share(&mail, 10), AcceptShare::ALL);
        let refused = workload(vec![session(0, vec![bulk(&[OptedOut])])]);
        assert_eq!(share(&refused, 10), AcceptShare::NONE);
    }
}
