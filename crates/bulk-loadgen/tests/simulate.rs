//! `simulate`: the workload's client bytes through real protocol sessions and a policy, in
//! process, every reply checked.

mod common;

use bulk_loadgen::simulate::{session_config, simulate};
use bulk_loadgen::{Expectations, VerifyMode};
use bulk_policy::Verdict;
use common::{OneWrong, memory_backend, prepare, scenario};

fn expectations(prepared: &common::Prepared) -> Expectations {
    Expectations {
        max_recipients: prepared.scenario.server.max_recipients,
        harvest_resistant: prepared.scenario.server.harvest_resistant,
    }
}

#[test]
fn every_session_and_rcpt_of_the_workload_is_simulated_and_checked() {
    let prepared = prepare(scenario(300, 1, None));
    let policy = memory_backend(&prepared.model);
    let config = session_config(&prepared.scenario.server);
    let result = simulate(
        &prepared.workload,
        &policy,
        config,
        expectations(&prepared),
        VerifyMode::Strict,
    );
    assert_eq!(result.sessions, 300);
    assert_eq!(result.rcpts, prepared.workload.rcpt_count());
    assert_eq!(result.failed_sessions, 0);
    assert_eq!(result.mismatches.total, 0, "{:?}", result.mismatches);
    assert!(result.messages > 0);
    assert!(result.cpu_ns_per_rcpt() > 0.0);
}

#[test]
fn a_wrong_verdict_is_caught_exactly_once() {
    let prepared = prepare(scenario(300, 1, None));
    let (session, victim) = common::lone_accepted_recipient(&prepared.workload);
    let policy = OneWrong {
        inner: memory_backend(&prepared.model),
        address: victim.address.clone(),
        verdict: Verdict::UnknownMailbox,
    };
    let config = session_config(&prepared.scenario.server);
    let result = simulate(
        &prepared.workload,
        &policy,
        config,
        expectations(&prepared),
        VerifyMode::Strict,
    );
    assert_eq!(result.mismatches.total, 1, "{:?}", result.mismatches);
    assert_eq!(result.mismatches.by_class["accepted->unknown"], 1);
    let example = &result.mismatches.examples[0];
    assert_eq!(example.session, session.index);
    assert_eq!(example.recipient, victim.address);
    assert!(example.reply.starts_with("550 5.1.1"), "{example:?}");
    // Checking off counts nothing.
    let unchecked = simulate(
        &prepared.workload,
        &policy,
        config,
        expectations(&prepared),
        VerifyMode::Off,
    );
    assert_eq!(unchecked.mismatches.total, 0);
}
