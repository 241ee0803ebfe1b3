//! A population as a Postfix access table, for `check_recipient_access`: the same
//! verdicts and reply codes as `serve`, with preferences applied to all mail (Postfix has
//! no BULK verb; for preferences that apply to bulk mail only, use the policy server).
//!
//! A key and its action, separated by a TAB:
//!
//! ```text
//! # bulkbench population as a Postfix access table (check_recipient_access): seed 21, ...
//! riverbend.example           550 5.1.1 Mailbox unknown
//! ann.smith@riverbend.example DUNNO
//! bob@riverbend.example       550 5.7.1 Recipient does not accept bulk mail
//! ```
//!
//! - Each served domain: `550 5.1.1` ([`UNKNOWN_MAILBOX`]): its unknown mailboxes.
//! - Each mailbox: `DUNNO` when it accepts (its entry ends the table's lookup, so the
//!   domain's refusal never reaches it, and the restrictions after the table still run),
//!   `550 5.7.1` ([`OPTED_OUT`](crate::policy::OPTED_OUT)) when not: its preference under its domain's regime
//!   (`Preference::verdict`), as the memory backend resolves it.
//! - Domains not served have no entry: Postfix's own relay control answers them
//!   (`reject_unauth_destination`: `554 5.7.1 ... Relay access denied` with the default
//!   `relay_domains_reject_code = 554`).
//!
//! Postfix looks an address up in an indexed table (hash, lmdb) as `user+ext@domain`,
//! `user@domain`, `domain`, `user+ext@`, `user@` (access(5)), the first found winning: a
//! mailbox's own entry comes before its domain's, and with `recipient_delimiter = +` a
//! subaddress falls back to its mailbox, as `serve` strips `+tag`. Lookups are
//! case-folded, as `serve`'s default normalization folds them; the keys written are the
//! population's, lowercase. Postfix's default `parent_domain_matches_subdomains` lists
//! `smtpd_access_maps` and `relay_domains`, so a domain entry, and a relay domain, would
//! also match their subdomains, which `serve` does not serve: take both out of it
//! (README.md, "Postfix", has the main.cf lines).

use std::io::{self, Write};

use bulk_population::{MailboxEntry, PopulationModel};

use crate::policy::{UNKNOWN_MAILBOX, action};

/// Writes `model`'s population as an access table (format in the [module docs](self)):
/// a comment, the domains, then every mailbox, generated in parallel batches and written
/// in order ([`PopulationModel::write_mailboxes_with`]): memory stays bounded whatever the
/// population's size. Calls `progress` with the number of mailboxes written after each
/// batch.
pub fn write_table(
    model: &PopulationModel,
    w: impl Write,
    progress: impl FnMut(u64),
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(1 << 16, w);
    writeln!(
        w,
        "# bulkbench population as a Postfix access table (check_recipient_access): seed {}, \
         {} domains, {} mailboxes",
        model.seed(),
        model.domain_count(),
        model.mailbox_count()
    )?;
    for d in 0..model.domain_count() {
        writeln!(w, "{}\t{UNKNOWN_MAILBOX}", model.domain(d).0)?;
    }
    model.write_mailboxes_with(&mut w, write_mailbox, progress)?;
    w.flush()
}

/// One mailbox's line: its address and the action of its verdict, preferences applying
/// to all mail.
fn write_mailbox(entry: MailboxEntry<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(entry.local.as_bytes());
    out.push(b'@');
    out.extend_from_slice(entry.domain.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(action(entry.verdict(), true).as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::policy::{DUNNO, NOT_LOCAL};
    use bulk_policy::Verdict;
    use bulk_population::{RecipientDraws, Scenario};

    const SCENARIO: &str = r#"
        name = "access-test"
        seed = 5
        [population]
        mailboxes = 3000
        domains = 12
        opt_in_domain_share = 0.3
        [workload]
        sessions = 10
        unknown_share = 0.2
        foreign_share = 0.1
        subaddress_share = 0.3
        mixed_case_share = 0.3
    "#;

    fn table(model: &PopulationModel) -> String {
        let mut out = Vec::new();
        write_table(model, &mut out, |_| ()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_line_per_domain_and_mailbox() {
        let scenario = Scenario::from_toml(SCENARIO, "access-test").unwrap();
        let model = PopulationModel::from_scenario(&scenario);
        let text = table(&model);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# bulkbench population as a Postfix access table"));
        assert!(lines[0].ends_with("seed 5, 12 domains, 3000 mailboxes"));
        assert_eq!(lines.len(), 1 + 12 + 3000);
        for (d, line) in lines[1..13].iter().enumerate() {
            assert_eq!(
                *line,
                format!("{}\t550 5.1.1 Mailbox unknown", model.domain(d).0)
            );
        }
        let mut seen = [0; 2];
        for (i, line) in lines[13..].iter().enumerate() {
            let (key, value) = line.split_once('\t').unwrap();
            assert_eq!(key, model.address(i as u64));
            assert_eq!(key, key.to_ascii_lowercase());
            assert!(!key.contains(char::is_whitespace));
            let expected = match model.verdict(i as u64) {
                Verdict::Accept => DUNNO,
                Verdict::OptedOut => "550 5.7.1 Recipient does not accept bulk mail",
                other => panic!("a mailbox's verdict is {other:?}"),
            };
            assert_eq!(value, expected, "{key}");
            seen[usize::from(value != DUNNO)] += 1;
        }
        // Both kinds are there, opt-in domains' default mailboxes among the refused.
        assert!(seen[0] > 100 && seen[1] > 100, "{seen:?}");
    }

    /// Postfix's lookup order for an address in an indexed access table (access(5),
    /// with `recipient_delimiter = +` and exact domain matches): the first key found.
    fn postfix_lookup<'t>(table: &HashMap<&str, &'t str>, address: &str) -> Option<&'t str> {
        let address = address.to_ascii_lowercase();
        let (local, domain) = address.rsplit_once('@')?;
        let base = match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => Some(base),
            _ => None,
        };
        let mut keys = vec![address.clone()];
        keys.extend(base.map(|base| format!("{base}@{domain}")));
        keys.push(domain.to_owned());
        keys.push(format!("{local}@"));
        keys.extend(base.map(|base| format!("{base}@")));
        keys.iter().find_map(|key| table.get(key.as_str()).copied())
    }

    /// The table, read with Postfix's lookup order, answers what `serve` answers in a BULK
    /// transaction, for the workload's recipients: mixed case, `+tag`, unknown and foreign
    /// ones included (the last left to Postfix's relay control).
    #[test]
    fn postfix_lookups_give_serves_replies() {
        let scenario = Scenario::from_toml(SCENARIO, "access-test").unwrap();
        let model = PopulationModel::from_scenario(&scenario);
        let text = table(&model);
        let entries: HashMap<&str, &str> = text
            .lines()
            .skip(1)
            .map(|line| line.split_once('\t').unwrap())
            .collect();
        let population = model.build();
        let draws = RecipientDraws::new(&model, &scenario.workload, scenario.seed);
        let mut kinds = HashMap::new();
        for index in 0..5000 {
            let recipient = draws.recipient(index);
            let verdict = population.verdict_of(recipient.address.as_bytes());
            assert_eq!(verdict, recipient.verdict);
            let expected = match action(verdict, true) {
                NOT_LOCAL => None,
                action => Some(action),
            };
            assert_eq!(
                postfix_lookup(&entries, &recipient.address),
                expected,
                "{}",
                recipient.address
            );
            *kinds.entry(format!("{verdict:?}")).or_insert(0) += 1;
            let tagged = recipient.address.contains('+');
            let mixed = recipient.address != recipient.address.to_ascii_lowercase();
            *kinds.entry(format!("+tag {tagged}")).or_insert(0) += 1;
            *kinds.entry(format!("mixed {mixed}")).or_insert(0) += 1;
        }
        for kind in [
            "Accept",
            "OptedOut",
            "UnknownMailbox",
            "NotLocal",
            "+tag true",
            "mixed true",
        ] {
            assert!(
                kinds.get(kind).is_some_and(|&n| n > 50),
                "{kind}: {kinds:?}"
            );
        }
    }

    #[test]
    fn the_table_does_not_depend_on_the_thread_count() {
        let scenario = Scenario::from_toml(SCENARIO, "access-test").unwrap();
        let model = PopulationModel::from_scenario(&scenario);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| table(&model));
        assert!(one == table(&model));
    }
}
