//! The verdicts a workload expects, computed from the scenario alone, agree with the
//! reference semantics of the population a server would load.

use bulk_policy::{NormalizeConfig, Population, Verdict};
use bulk_population::{PopulationModel, Scenario, Workload};

const SCENARIOS: [&str; 3] = [
    r#"
seed = 1
[population]
mailboxes = 4000
domains = 30
explicit_share = 0.5
[workload]
sessions = 400
recipients_max = 40
unknown_share = 0.1
foreign_share = 0.1
subaddress_share = 0.3
mixed_case_share = 0.3
"#,
    // Steep popularity over a small population: many repeats, heavy decoration.
    r#"
seed = 99
[population]
mailboxes = 300
domains = 5
domain_size_zipf = 2.0
opt_in_domain_share = 0.5
[workload]
sessions = 300
recipients_min = 20
recipients_max = 20
recipients_distribution = "fixed"
recipient_popularity = "zipf"
popularity_zipf = 1.5
subaddress_share = 0.5
mixed_case_share = 0.5
"#,
    // One big domain: local-part blocks beyond the first are drawn.
    r#"
seed = 3
[population]
mailboxes = 40000
domains = 1
[workload]
sessions = 200
"#,
];

#[test]
fn every_recipient_verdict_matches_the_built_population() {
    for text in SCENARIOS {
        let scenario = Scenario::from_toml(text, "verdicts").unwrap();
        let model = PopulationModel::from_scenario(&scenario);
        let population = model.build();
        let workload = Workload::generate(&scenario, &model);
        let mut seen = [0usize; 4];
        for session in &workload.sessions {
            for (_, r) in session.recipients() {
                assert_eq!(
                    population.verdict_of(r.address.as_bytes()),
                    r.verdict,
                    "{} in session {}",
                    r.address,
                    session.index
                );
                seen[r.verdict as usize] += 1;
            }
        }
        // Each scenario exercises accepts and refusals.
        assert!(
            seen[Verdict::Accept as usize] > 0 && seen[Verdict::OptedOut as usize] > 0,
            "{seen:?}"
        );
    }
}

#[test]
fn exported_file_gives_the_same_verdicts() {
    let scenario = Scenario::from_toml(SCENARIOS[0], "verdicts").unwrap();
    let model = PopulationModel::from_scenario(&scenario);
    let mut file = Vec::new();
    model.write_file(&mut file).unwrap();
    let population = Population::parse(&file, NormalizeConfig::default()).unwrap();
    assert_eq!(population.mailbox_count() as u64, model.mailbox_count());
    for r in Workload::generate(&scenario, &model)
        .sessions
        .iter()
        .flat_map(|s| s.recipients().map(|(_, r)| r.clone()).collect::<Vec<_>>())
    {
        assert_eq!(
            population.verdict_of(r.address.as_bytes()),
            r.verdict,
            "{}",
            r.address
        );
    }
}
