//! `bench --ceiling`: this machine's canned-reply ceiling. After the measured run, the same
//! workload runs against `bulkbench serve --backend canned:SHARE` (the same server, flags
//! and pinning, every RCPT answered by a fixed rule without any lookup), and the measured
//! run's summary records that arm's figures and its own as ratios to them. The canned
//! arm's replies come from its rule, not the population, so it runs with `--verify off`.

use bulk_policy::{AcceptShare, Verdict};
use bulk_population::{Kind, Workload};
use bulk_report::Summary;
use bulk_report::summary::Ceiling;
use tracing::{info, warn};

use crate::load::{Prepared, RunArgs, RunTarget, VerifyArg, interrupt, run_once};

/// The share of RCPTs the canned rule accepts, so that the canned arm's reply mix (and so
/// the DATA that follows) resembles the measured run's: of the RCPTs of BULK transactions
/// that reach the backend (within the recipient limit: later ones get `452` without a
/// lookup), those the workload expects accepted. MAIL transactions do not count: there the
/// session answers `250` to an opted-out verdict, so the rule's refusals are accepted
/// anyway. A workload without a BULK RCPT gets [`AcceptShare::ALL`].
pub(crate) fn accept_share(workload: &Workload, max_recipients: u32) -> AcceptShare {
    let (mut accepted, mut total) = (0u64, 0u64);
    for session in workload.sessions.iter().filter(|s| s.kind == Kind::Bulk) {
        for recipient in session.recipients.iter().take(max_recipients as usize) {
            total += 1;
            accepted += u64::from(recipient.expected(Kind::Bulk) == Verdict::Accept);
        }
    }
    AcceptShare::from_ratio(accepted, total).unwrap_or(AcceptShare::ALL)
}

/// Runs the canned arm and records the ceiling in `measured` (the measured run's summary).
/// Skipped, with a warning, when the measured run was interrupted: the user asked to stop.
pub(crate) fn measure_into(
    measured: &mut Summary,
    args: &RunArgs,
    prepared: &Prepared,
) -> anyhow::Result<()> {
    if measured.window.interrupted || interrupt().is_cancelled() {
        warn!("interrupted: the ceiling was not measured");
        return Ok(());
    }
    let share = accept_share(&prepared.workload, prepared.scenario.server.max_recipients);
    let backend = format!("canned:{share}");
    info!(
        backend,
        "ceiling: the same workload against `serve --backend {backend}` (replies not verified)"
    );
    let canned_args = RunArgs {
        verify: VerifyArg::Off,
        ..args.clone()
    };
    let (canned, _) = run_once(
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
    use bulk_population::{Recipient, SessionSpec};

    fn session(index: u64, kind: Kind, verdicts: &[Verdict]) -> SessionSpec {
        SessionSpec {
            index,
            start_offset_us: 0,
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
            pipelining: true,
            message_size: 100,
        }
    }

    fn workload(sessions: Vec<SessionSpec>) -> Workload {
        Workload {
            scenario: "t".into(),
            seed: 1,
            population: None,
            sessions,
        }
    }

    #[test]
    fn the_share_is_the_expected_accepts_of_bulk_rcpts_within_the_limit() {
        use Verdict::{Accept, NotLocal, OptedOut, UnknownMailbox};
        let w = workload(vec![
            session(0, Kind::Bulk, &[Accept, OptedOut, UnknownMailbox, NotLocal]),
            session(1, Kind::Bulk, &[Accept, Accept, OptedOut, Accept]),
            // MAIL: opted-out recipients are accepted there whatever the rule says.
            session(2, Kind::Mail, &[OptedOut, OptedOut, OptedOut]),
        ]);
        assert_eq!(
            accept_share(&w, 1000),
            AcceptShare::from_ratio(4, 8).unwrap()
        );
        // With a limit of 2, the RCPTs past it never reach the backend.
        assert_eq!(accept_share(&w, 2), AcceptShare::from_ratio(3, 4).unwrap());
        assert_eq!(
            accept_share(&workload(vec![session(0, Kind::Mail, &[Accept])]), 10),
            AcceptShare::ALL
        );
        assert_eq!(
            accept_share(&workload(vec![session(0, Kind::Bulk, &[OptedOut])]), 10),
            AcceptShare::NONE
        );
    }
}
