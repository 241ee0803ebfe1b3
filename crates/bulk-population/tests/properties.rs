//! Property tests: trace round trips, and populations that always load.

use bulk_policy::{NormalizeConfig, Population, Verdict};
use bulk_population::{
    Kind, PopulationConfig, PopulationModel, Recipient, SessionSpec, Transaction, Workload,
};
use proptest::prelude::*;

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Accept),
        Just(Verdict::OptedOut),
        Just(Verdict::UnknownMailbox),
        Just(Verdict::NotLocal),
    ]
}

fn transaction() -> impl Strategy<Value = Transaction> {
    (
        prop_oneof![Just(Kind::Bulk), Just(Kind::Mail)],
        ".*",
        prop::collection::vec((".*", verdict()), 0..5),
        any::<u32>(),
    )
        .prop_map(|(kind, sender, recipients, message_size)| Transaction {
            kind,
            sender,
            recipients: recipients
                .into_iter()
                .map(|(address, verdict)| Recipient { address, verdict })
                .collect(),
            message_size,
        })
}

fn session() -> impl Strategy<Value = SessionSpec> {
    (
        any::<u64>(),
        any::<bool>(),
        prop::collection::vec(transaction(), 1..4),
        any::<bool>(),
    )
        .prop_map(
            |(start_offset_us, pipelining, transactions, starttls)| SessionSpec {
                index: 0,
                start_offset_us,
                pipelining,
                transactions,
                starttls,
            },
        )
}

proptest! {
    /// Any strings (quotes, newlines, non-ASCII) survive write_trace -> read_trace.
    #[test]
    fn trace_round_trips(
        mut sessions in prop::collection::vec(session(), 0..6),
        gaps in prop::collection::vec(1u64..1000, 6),
        scenario in ".*",
        seed in any::<u64>(),
        population in any::<Option<u64>>(),
    ) {
        let mut index = 0;
        for (session, gap) in sessions.iter_mut().zip(gaps) {
            index += gap;
            session.index = index;
        }
        let workload = Workload::from_sessions(scenario, seed, population, sessions);
        let mut bytes = Vec::new();
        workload.write_trace(&mut bytes).unwrap();
        prop_assert_eq!(Workload::read_trace(bytes.as_slice()).unwrap(), workload);
    }

    /// Any small config gives a population file that loads (no duplicate, no unreachable
    /// mailbox) and whose verdicts are the model's.
    #[test]
    fn populations_always_load(
        mailboxes in 1u64..3000,
        domains in 1u64..60,
        zipf in 0.0f64..3.0,
        opt_in in 0.0f64..=1.0,
        explicit in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let config = PopulationConfig {
            mailboxes: mailboxes.try_into().unwrap(),
            domains: domains.try_into().unwrap(),
            domain_size_zipf: zipf.try_into().unwrap(),
            opt_in_domain_share: opt_in.try_into().unwrap(),
            explicit_share: explicit.try_into().unwrap(),
            ..PopulationConfig::default()
        };
        let model = PopulationModel::new(&config, seed);
        let mut file = Vec::new();
        model.write_file(&mut file).unwrap();
        let population = Population::parse(&file, NormalizeConfig::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(population.mailbox_count() as u64, mailboxes);
        prop_assert_eq!(population.domain_count() as u64, domains);
        for i in (0..mailboxes).step_by(13) {
            prop_assert_eq!(population.verdict_of(model.address(i).as_bytes()), model.verdict(i));
        }
    }
}
