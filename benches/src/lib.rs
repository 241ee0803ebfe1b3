//! The synthetic population and recipients every bench measures, built with
//! `bulk_population` ([`PopulationModel`], [`RecipientDraws`]): the generator the load
//! generator and the backends' scale tests use, so all of them measure the same kind of
//! data, and every draw is seeded by (seed, index) in its one seeding module.
//!
//! [`drive`] holds the drivers the criterion benches and the instruction-count workloads
//! (`src/bin/icount.rs`, run by `.ci/icount`) share.
#![allow(missing_docs)] // an unpublished bench helper: the names say it

pub mod drive;

use bulk_population::{
    CountU64, NonNegative, Popularity, PopulationConfig, PopulationModel, RecipientDraws, Scenario,
    Share, Workload, WorkloadConfig,
};

/// Seed of the benches' population; recipient pools use [`SEED`] (uniform) and `SEED + 1`
/// (Zipf), so the two pools do not share their draws.
pub const SEED: u64 = 1;
/// One served domain per this many mailboxes (1,000 domains at 1,000,000 mailboxes).
pub const MAILBOXES_PER_DOMAIN: u64 = 1_000;
/// Share of recipients that name no mailbox (in a served domain).
pub const UNKNOWN_SHARE: Share = Share::new(0.05).unwrap();
/// Shares of recipients written with a `+tag`, and in mixed case (drawn independently:
/// about 10% have one or both).
pub const SUBADDRESS_SHARE: Share = Share::new(0.05).unwrap();
pub const MIXED_CASE_SHARE: Share = Share::new(0.05).unwrap();
/// Exponent of the Zipf popularity.
pub const ZIPF_EXPONENT: NonNegative = NonNegative::new(1.0).unwrap();

/// `mailboxes` mailboxes in `mailboxes / MAILBOXES_PER_DOMAIN` domains of equal size (45%
/// opt-in); mailboxes 35% `in`, 15% `out`, 50% `default`.
pub fn population(mailboxes: u64) -> PopulationModel {
    let domains = (mailboxes / MAILBOXES_PER_DOMAIN).max(1);
    let config = PopulationConfig {
        mailboxes: mailboxes.try_into().expect("1..=MAX_MAILBOXES mailboxes"),
        domains: domains.try_into().expect("1..=MAX_DOMAINS domains"),
        domain_size_zipf: const { NonNegative::new(0.0).unwrap() },
        opt_in_domain_share: const { Share::new(0.45).unwrap() },
        explicit_share: const { Share::new(0.5).unwrap() },
        explicit_opt_in_share: const { Share::new(0.7).unwrap() },
    };
    PopulationModel::new(&config, SEED)
}

/// The recipients of `model` with `popularity` (Zipf: s = [`ZIPF_EXPONENT`], ranks
/// scattered over the mailboxes): [`UNKNOWN_SHARE`] unknown mailboxes of served domains,
/// no foreign domain, some `+tag`s and mixed case. Recipient `i` depends only on
/// (popularity, i), so the first 10,000 uniform recipients of `policy_backends` at 1M are
/// `rcpt_path`'s.
pub fn recipients(model: &PopulationModel, popularity: Popularity) -> RecipientDraws {
    let (popularity_zipf, seed) = match popularity {
        Popularity::Uniform => (None, SEED),
        Popularity::Zipf => (Some(ZIPF_EXPONENT), SEED + 1),
    };
    let mix = WorkloadConfig {
        recipient_popularity: popularity,
        popularity_zipf,
        unknown_share: UNKNOWN_SHARE,
        foreign_share: const { Share::new(0.0).unwrap() },
        subaddress_share: SUBADDRESS_SHARE,
        mixed_case_share: MIXED_CASE_SHARE,
        ..WorkloadConfig::default()
    };
    RecipientDraws::new(model, &mix, seed)
}

/// `scenarios/quick.toml`, its population model, and its first `sessions` sessions as a list
/// run once. quick is sized in time; its sessions depend only on (seed, index), so these are
/// the first sessions of the pool a run cycles (`Workload::generate` draws only these, not
/// the whole pool of a million RCPTs).
pub fn quick_sessions(sessions: u64) -> (Scenario, PopulationModel, Workload) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/quick.toml");
    let mut scenario = Scenario::load(path).expect("scenarios/quick.toml loads");
    scenario.workload.sessions = Some(CountU64::new(sessions).expect("a valid session count"));
    scenario.workload.duration_secs = None;
    let model = PopulationModel::new(&scenario.population, scenario.seed);
    let workload = Workload::generate(&scenario, &model);
    assert_eq!(workload.sessions.len() as u64, sessions);
    (scenario, model, workload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulk_policy::{Preference, Verdict};

    /// The benches' population and recipients, small: the shares they are described with,
    /// and verdicts that agree with `Population::verdict_of`.
    #[test]
    fn population_and_recipients_are_as_described() {
        let model = population(20_000);
        assert_eq!(model.domain_count(), 20);
        let explicit: Vec<Preference> = (0..20_000)
            .map(|i| model.mailbox(i).preference)
            .filter(|&p| p != Preference::Default)
            .collect();
        let opted_in = explicit.iter().filter(|&&p| p == Preference::In).count();
        assert!(
            (9_500..=10_500).contains(&explicit.len()),
            "{}",
            explicit.len()
        );
        assert!((6_700..=7_300).contains(&opted_in), "{opted_in}");
        let built = model.build();
        for popularity in [Popularity::Uniform, Popularity::Zipf] {
            let draws = recipients(&model, popularity);
            let drawn: Vec<_> = (0..5_000).map(|i| draws.recipient(i)).collect();
            for r in &drawn {
                assert_eq!(built.verdict_of(r.address.as_bytes()), r.verdict);
            }
            let unknown = drawn
                .iter()
                .filter(|r| r.verdict == Verdict::UnknownMailbox)
                .count();
            let variants = drawn
                .iter()
                .filter(|r| {
                    r.address.contains('+') || r.address.bytes().any(|b| b.is_ascii_uppercase())
                })
                .count();
            assert!((180..=320).contains(&unknown), "{unknown}");
            assert!((400..=600).contains(&variants), "{variants}");
            assert!(drawn.iter().all(|r| r.verdict != Verdict::NotLocal));
        }
    }
}
