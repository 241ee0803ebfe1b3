//! Parsing large generated populations through the public API.

use std::fmt::Write as _;

use bulk_policy::{MemoryBackend, NormalizeConfig, Population, Verdict};

/// A population of `mailboxes` mailboxes over 100 domains, in the file format, with mixed
/// case, quoted local parts and comments, mailboxes before their domains' declarations.
fn generated(mailboxes: usize) -> String {
    let mut text = String::with_capacity(mailboxes * 32);
    for i in 0..mailboxes {
        let preference = ["in", "out", "default"][i % 3];
        let domain = i % 100;
        match i % 10 {
            0 => writeln!(text, "\"User {i}\"@Domain{domain}.example\t{preference}"),
            1 => writeln!(
                text,
                "# mailbox {i}\r\nFirst.Last{i}@domain{domain}.example\t{preference}\r"
            ),
            _ => writeln!(text, "user{i}@domain{domain}.example\t{preference}"),
        }
        .unwrap();
    }
    for domain in 0..100 {
        let regime = if domain % 2 == 0 { "opt-in" } else { "opt-out" };
        writeln!(text, "@domain{domain}.example\t{regime}").unwrap();
    }
    text
}

#[test]
fn parses_a_hundred_thousand_mailboxes() {
    let population = Population::parse(generated(100_000).as_bytes(), NormalizeConfig::default())
        .expect("generated population parses");
    assert_eq!(
        (population.domain_count(), population.mailbox_count()),
        (100, 100_000)
    );

    let cases: &[(&str, Verdict)] = &[
        ("user2@domain2.example", Verdict::OptedOut), // default, opt-in domain
        ("user5@domain5.example", Verdict::Accept),   // default, opt-out domain
        ("USER3+tag@Domain3.example", Verdict::Accept),
        ("user4@domain4.example", Verdict::OptedOut),
        ("\"user 10\"@domain10.example", Verdict::OptedOut),
        ("first.last11@DOMAIN11.example", Verdict::Accept),
        ("user2@domain3.example", Verdict::UnknownMailbox),
        ("user2@domain100.example", Verdict::NotLocal),
    ];
    let backend = MemoryBackend::new(population.clone());
    assert_eq!(backend.len(), 100_000);
    let mut scratch = Vec::new();
    for (address, expected) in cases {
        assert_eq!(
            population.verdict_of(address.as_bytes()),
            *expected,
            "{address}"
        );
        assert_eq!(
            backend.lookup_one(address.as_bytes(), &mut scratch),
            *expected,
            "{address}"
        );
    }

    let mut written = Vec::new();
    population.write_to(&mut written).unwrap();
    let reparsed = Population::parse(&written, NormalizeConfig::default()).unwrap();
    assert_eq!(reparsed, population);
}

/// The load-time requirement (1,000,000 mailboxes in a few seconds, release build). Run with
/// `cargo test --release -p bulk-policy --test population -- --ignored --nocapture`.
#[test]
#[ignore = "slow in debug builds; run in release to check load time"]
fn parses_a_million_mailboxes() {
    let text = generated(1_000_000);
    let start = std::time::Instant::now();
    let population = Population::parse(text.as_bytes(), NormalizeConfig::default()).unwrap();
    let parsed = start.elapsed();
    let backend = MemoryBackend::new(population);
    println!("parse {parsed:?}, parse + build {:?}", start.elapsed());
    assert_eq!(backend.len(), 1_000_000);
}
