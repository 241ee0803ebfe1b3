//! `simulate`: the workload's client bytes through real protocol sessions and a policy, in
//! process, every reply checked.

mod common;

use bulk_loadgen::simulate::{SimulateResult, session_config, simulate, simulate_serial};
use bulk_loadgen::{Expectations, VerifyMode};
use bulk_policy::{PolicyBackend, Verdict};
use common::{OneWrong, memory_backend, prepare, scenario};

/// Simulates the prepared workload against `policy` with the scenario's server settings.
fn simulate_with<P: PolicyBackend>(
    prepared: &common::Prepared,
    policy: &P,
    verify: VerifyMode,
) -> SimulateResult {
    simulate(
        &prepared.workload,
        policy,
        session_config(&prepared.scenario, &prepared.workload),
        Expectations::of(&prepared.scenario.server),
        verify,
    )
}

#[test]
fn every_session_and_rcpt_of_the_workload_is_simulated_and_checked() {
    let prepared = prepare(scenario(300, 1, None));
    let result = simulate_with(
        &prepared,
        &memory_backend(&prepared.model),
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
    let result = simulate_with(&prepared, &policy, VerifyMode::Strict);
    common::assert_the_one_mismatch(
        &result.mismatches,
        session,
        victim,
        "accepted->unknown",
        "550 5.1.1",
    );
    // Checking off counts nothing.
    let unchecked = simulate_with(&prepared, &policy, VerifyMode::Off);
    assert_eq!(unchecked.mismatches.total, 0);
}

#[test]
fn sessions_of_several_transactions_simulate_as_they_run() {
    for pipelining in [true, false] {
        let prepared = prepare(common::transactions_scenario(pipelining));
        let (messages, _) = common::transaction_counts(&prepared.workload);
        let result = simulate_with(
            &prepared,
            &memory_backend(&prepared.model),
            VerifyMode::Strict,
        );
        assert_eq!(result.failed_sessions, 0, "pipelining {pipelining}");
        assert_eq!(result.mismatches.total, 0, "{:?}", result.mismatches);
        assert_eq!(result.rcpts, prepared.workload.rcpt_count());
        assert_eq!(result.messages, messages, "pipelining {pipelining}");
    }
}

/// The serial path (`simulate_serial`, what `.ci/icount` counts) does what `simulate`
/// does: the same sessions, RCPTs and messages, and the same mismatch caught.
#[test]
fn the_serial_path_simulates_what_the_parallel_one_does() {
    let prepared = prepare(scenario(300, 1, None));
    let (_, victim) = common::lone_accepted_recipient(&prepared.workload);
    let policy = OneWrong {
        inner: memory_backend(&prepared.model),
        address: victim.address.clone(),
        verdict: Verdict::UnknownMailbox,
    };
    let server = &prepared.scenario.server;
    let parallel = simulate_with(&prepared, &policy, VerifyMode::Strict);
    let serial = simulate_serial(
        &prepared.workload.sessions,
        &policy,
        session_config(&prepared.scenario, &prepared.workload),
        Expectations::of(server),
        VerifyMode::Strict,
    );
    assert_eq!(serial.threads, 1);
    assert_eq!(
        (serial.sessions, serial.rcpts, serial.messages),
        (parallel.sessions, parallel.rcpts, parallel.messages)
    );
    assert_eq!(serial.failed_sessions, 0);
    assert_eq!(serial.mismatches.total, 1);
    assert_eq!(serial.mismatches, parallel.mismatches);
}

#[test]
fn starttls_sessions_take_the_same_steps_without_the_cryptography() {
    let plain = prepare(scenario(200, 1, None));
    let mut with_tls = plain.scenario.clone();
    with_tls.workload.starttls_share = 1.0.try_into().unwrap();
    let tls = prepare(with_tls);
    assert!(tls.workload.sessions.iter().all(|s| s.starttls));
    let backend = memory_backend(&plain.model);
    let a = simulate_with(&plain, &backend, VerifyMode::Strict);
    let b = simulate_with(&tls, &backend, VerifyMode::Strict);
    // STARTTLS, the handshake and the second EHLO change no transaction: the same
    // replies, every one checked.
    assert_eq!(b.failed_sessions, 0);
    assert_eq!(b.mismatches.total, 0, "{:?}", b.mismatches);
    assert_eq!(
        (b.sessions, b.rcpts, b.messages),
        (a.sessions, a.rcpts, a.messages)
    );
    // And in order, one session at a time, as the instruction count runs it.
    let server = &tls.scenario.server;
    let serial = simulate_serial(
        &tls.workload.sessions,
        &backend,
        session_config(&tls.scenario, &tls.workload),
        Expectations::of(server),
        VerifyMode::Strict,
    );
    assert_eq!((serial.failed_sessions, serial.rcpts), (0, b.rcpts));
}

/// A scenario for a server applying preferences to every transaction: the simulated
/// server is configured so, as `bench` starts `serve`, and every MAIL reply verifies.
#[test]
fn preferences_applied_to_all_mail_are_simulated_so() {
    let mut all = scenario(200, 1, None);
    all.workload.bulk_share = 0.0.try_into().unwrap();
    all.server.preferences_apply_to = bulk_population::PreferencesApplyTo::All;
    let prepared = prepare(all);
    let result = simulate_with(
        &prepared,
        &memory_backend(&prepared.model),
        VerifyMode::Strict,
    );
    assert!(result.rcpts > 0);
    assert_eq!(result.mismatches.total, 0, "{:?}", result.mismatches);
}
