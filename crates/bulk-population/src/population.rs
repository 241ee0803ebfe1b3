//! Synthetic populations: served domains with their regimes, and mailboxes with their local
//! parts and preferences, each a pure function of (population config, seed, index).
//!
//! # Layout
//!
//! Domain `d` (0-based rank) gets a contiguous range of mailbox indices; sizes follow a Zipf
//! law of exponent `domain_size_zipf`, computed from cumulative weights (no randomness), so
//! rank 0 is the largest domain and, when `mailboxes >= domains`, every domain has at least
//! one mailbox. A mailbox's domain is found by binary search over the range starts.
//!
//! # Uniqueness
//!
//! Local parts must be unique within a domain after normalization (lowercase, cut at `+`).
//! They are lowercase and never contain `+`, so they must simply be distinct strings. This is
//! guaranteed by construction, without looking at other mailboxes:
//!
//! - each mailbox draws a *template* (`first.last`, `flast`, `first42`, ...) from its own RNG;
//! - the template's name components come from the mailbox's index `j` within its domain,
//!   through a bijection: with `C` the number of component combinations of the template,
//!   `j = k*C + r`, the components are `(r * m + offset_k) mod C` decoded in mixed radix
//!   (`m` coprime with `C`), and the *block* `k` is written into the local part (a trailing
//!   number for `first.last`-like templates when k > 0, or `k*100 + two random digits` for
//!   templates that always end in a number). Two mailboxes of one domain that draw the same
//!   template therefore differ in components or in block;
//! - templates cannot produce each other's strings: they differ by separators (`.`, two `.`,
//!   `_`, `-`), by the length of the first dotted segment (an initial vs a first name of at
//!   least 3 letters), or, for the letters-then-digits shapes, by word lists that the tests in
//!   `names.rs` prove disjoint (no initial + last name is a first name, a nickname word or a
//!   role word; two-letter initials are shorter than any name);
//! - role accounts (`info`, `sales`) are only used for `j < ROLES.len()`, one role per `j`.
//!
//! Local parts never contain two `-`; the workload generator's unknown mailboxes do
//! (`ann-nobody-4711`), so they are provably absent.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;

use bulk_policy::{NormalizeConfig, Population, Preference, Regime, Verdict};
use rand::RngExt;
use rayon::prelude::*;

use crate::names::{DOMAIN_PREFIXES, DOMAIN_SUFFIXES, DOMAIN_WORDS, FIRST, LAST, ROLES, WORDS};
use crate::scenario::{PopulationConfig, Scenario};
use crate::seeding::{
    ItemRng, STREAM_DOMAIN, STREAM_DOMAIN_NAME, STREAM_LOCAL_OFFSET, STREAM_MAILBOX, affine, fmix,
    item_rng, mix, scatter_multiplier,
};

/// Top-level domain of every served domain. Foreign recipients and senders use `.test`, so
/// they can never be served.
pub(crate) const SERVED_TLD: &str = "example";

/// Chance that a mailbox with index `j < ROLES.len()` in its domain is a role account.
const ROLE_CHANCE: f64 = 0.3;

/// Mailboxes generated per parallel task when building or writing.
const TASK_MAILBOXES: u64 = 4096;
/// Mailboxes held in memory at once when writing (bounded memory for any population size).
const WRITE_BATCH_MAILBOXES: u64 = 256 * 1024;

/// One mailbox of a population.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// Local part, lowercase, without `+`.
    pub local: String,
    /// Index of its domain ([`PopulationModel::domain`]).
    pub domain: usize,
    /// Its explicit preference, or `Default` (its domain's regime decides).
    pub preference: Preference,
}

/// One mailbox as [`PopulationModel::write_mailboxes_with`] hands it to its renderer,
/// borrowed for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxEntry<'a> {
    /// Local part, lowercase, without `+`.
    pub local: &'a str,
    /// Its domain's name (`riverbend.example`).
    pub domain: &'a str,
    /// Its domain's regime.
    pub regime: Regime,
    /// Its explicit preference, or `Default` (the regime decides).
    pub preference: Preference,
}

impl MailboxEntry<'_> {
    /// The verdict a bulk RCPT to this mailbox gets: its preference under its domain's
    /// regime.
    pub fn verdict(&self) -> Verdict {
        self.preference.verdict(self.regime)
    }

    /// Appends its population-file line, `local@domain<TAB>in|out|default`.
    fn write_population_line(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.local.as_bytes());
        out.push(b'@');
        out.extend_from_slice(self.domain.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(self.preference.as_str().as_bytes());
        out.push(b'\n');
    }
}

/// Local-part shapes, with their share (in percent) among non-role mailboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Template {
    /// `john.smith`, `john.smith3`
    FirstDotLast,
    /// `jsmith`, `jsmith2`
    InitialLast,
    /// `maria1987`
    FirstNum,
    /// `anna_berg42`
    FirstUnderscoreLastNum,
    /// `skater77`
    WordNum,
    /// `j.smith`
    InitialDotLast,
    /// `john.q.smith`
    FirstMiddleLast,
    /// `john-smith`
    FirstDashLast,
    /// `jd42`
    InitialsNum,
}

const TEMPLATES: [(Template, u32); 9] = [
    (Template::FirstDotLast, 32),
    (Template::InitialLast, 15),
    (Template::FirstNum, 13),
    (Template::FirstUnderscoreLastNum, 8),
    (Template::WordNum, 9),
    (Template::InitialDotLast, 6),
    (Template::FirstMiddleLast, 6),
    (Template::FirstDashLast, 5),
    (Template::InitialsNum, 6),
];

const LETTERS: u64 = 26;

impl Template {
    /// Number of component combinations (the `C` of the module docs).
    fn capacity(self) -> u64 {
        let (f, l, w) = (FIRST.len() as u64, LAST.len() as u64, WORDS.len() as u64);
        match self {
            Template::FirstDotLast | Template::FirstUnderscoreLastNum | Template::FirstDashLast => {
                f * l
            }
            Template::InitialLast | Template::InitialDotLast => LETTERS * l,
            Template::FirstNum => f,
            Template::WordNum => w,
            Template::FirstMiddleLast => f * LETTERS * l,
            Template::InitialsNum => LETTERS * LETTERS,
        }
    }

    fn index(self) -> usize {
        TEMPLATES
            .iter()
            .position(|&(t, _)| t == self)
            .unwrap_or_default()
    }
}

/// A deterministic synthetic population: cheap to clone (shared inside), queried mailbox by
/// mailbox without building anything.
#[derive(Clone, Debug)]
pub struct PopulationModel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    seed: u64,
    mailboxes: u64,
    explicit_share: f64,
    explicit_opt_in_share: f64,
    /// Full domain names (`riverbend.example`), by rank.
    names: Vec<String>,
    regimes: Vec<Regime>,
    /// `starts[d]..starts[d + 1]` are the mailboxes of domain d; `starts.len() == domains + 1`.
    starts: Vec<u64>,
    /// Scatter multiplier per template (same order as TEMPLATES).
    multipliers: [u64; TEMPLATES.len()],
    role_multiplier: u64,
}

/// Range starts of Zipf-sized domains (see the module docs).
fn domain_starts(mailboxes: u64, domains: usize, zipf: f64) -> Vec<u64> {
    let mut starts = Vec::with_capacity(domains + 1);
    let d = domains as u64;
    if mailboxes < d {
        // Fewer mailboxes than domains: one each for the first ranks, the rest empty.
        starts.extend((0..d).map(|r| r.min(mailboxes)));
    } else {
        let rest = mailboxes - d;
        let weights: Vec<f64> = (0..domains).map(|r| ((r + 1) as f64).powf(-zipf)).collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        for (r, weight) in weights.iter().enumerate() {
            // floor(rest * cumulative / total) never decreases, so each domain keeps its
            // guaranteed mailbox; the last boundary is pinned to `mailboxes` below.
            let extra = ((rest as f64) * cumulative / total).floor();
            let extra = if extra.is_finite() {
                (extra as u64).min(rest)
            } else {
                0
            };
            starts.push(r as u64 + extra);
            cumulative += weight;
        }
    }
    starts.push(mailboxes);
    starts
}

impl PopulationModel {
    /// The population of `config` under `seed`. Any config gives a usable model: the types
    /// of its fields keep counts within the scenario maxima and shares in [0, 1].
    pub fn new(config: &PopulationConfig, seed: u64) -> Self {
        let mailboxes = config.mailboxes.get();
        let domains = config.domains.get() as usize;
        let zipf = config.domain_size_zipf.get();
        let opt_in_share = config.opt_in_domain_share.get();

        let word_count = DOMAIN_WORDS.len() as u64;
        let word_multiplier = scatter_multiplier(word_count);
        let (names, regimes) = (0..domains)
            .map(|d| {
                let d = d as u64;
                let mut rng = item_rng(seed, STREAM_DOMAIN, d);
                let regime = if rng.random::<f64>() < opt_in_share {
                    Regime::OptIn
                } else {
                    Regime::OptOut
                };
                // Bijection d -> (block, word), as for local parts: names are unique.
                let block = d / word_count;
                let offset = mix(seed, STREAM_DOMAIN_NAME, block);
                let word = DOMAIN_WORDS[affine(d, word_multiplier, offset, word_count) as usize];
                let name = if block > 0 {
                    format!("{word}{block}.{SERVED_TLD}")
                } else {
                    let style = rng.random_range(0..100u32);
                    if style < 55 {
                        format!("{word}.{SERVED_TLD}")
                    } else if style < 80 {
                        let suffix = DOMAIN_SUFFIXES[rng.random_range(0..DOMAIN_SUFFIXES.len())];
                        format!("{word}-{suffix}.{SERVED_TLD}")
                    } else {
                        let prefix = DOMAIN_PREFIXES[rng.random_range(0..DOMAIN_PREFIXES.len())];
                        format!("{prefix}.{word}.{SERVED_TLD}")
                    }
                };
                (name, regime)
            })
            .unzip();

        let mut multipliers = [1; TEMPLATES.len()];
        for (slot, (template, _)) in multipliers.iter_mut().zip(TEMPLATES) {
            *slot = scatter_multiplier(template.capacity());
        }
        PopulationModel {
            inner: Arc::new(Inner {
                seed,
                mailboxes,
                explicit_share: config.explicit_share.get(),
                explicit_opt_in_share: config.explicit_opt_in_share.get(),
                names,
                regimes,
                starts: domain_starts(mailboxes, domains, zipf),
                multipliers,
                role_multiplier: scatter_multiplier(ROLES.len() as u64),
            }),
        }
    }

    /// The population of a scenario (`scenario.population` under `scenario.seed`).
    pub fn from_scenario(scenario: &Scenario) -> Self {
        PopulationModel::new(&scenario.population, scenario.seed)
    }

    /// The seed the model was built with.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Number of mailboxes.
    pub fn mailbox_count(&self) -> u64 {
        self.inner.mailboxes
    }

    /// Number of served domains.
    pub fn domain_count(&self) -> usize {
        self.inner.names.len()
    }

    /// Name and regime of domain `d` (0 is the largest). Panics if `d >= domain_count()`.
    pub fn domain(&self, d: usize) -> (&str, Regime) {
        (&self.inner.names[d], self.inner.regimes[d])
    }

    /// Number of mailboxes of domain `d`. Panics if `d >= domain_count()`.
    pub fn domain_size(&self, d: usize) -> u64 {
        self.inner.starts[d + 1] - self.inner.starts[d]
    }

    /// Domain of mailbox `i`.
    pub(crate) fn domain_of(&self, i: u64) -> usize {
        // starts[0] == 0, so the partition point is at least 1.
        self.inner
            .starts
            .partition_point(|&start| start <= i)
            .saturating_sub(1)
    }

    /// Draws the preference: the first two draws of a mailbox's RNG, shared by `mailbox`
    /// and `verdict` so they agree.
    fn preference(&self, rng: &mut ItemRng) -> Preference {
        let explicit = rng.random::<f64>() < self.inner.explicit_share;
        let opted_in = rng.random::<f64>() < self.inner.explicit_opt_in_share;
        match (explicit, opted_in) {
            (false, _) => Preference::Default,
            (true, true) => Preference::In,
            (true, false) => Preference::Out,
        }
    }

    /// Mailbox `i` (`0..mailbox_count()`): a pure function of the seed and `i`. Indices past
    /// the end give mailboxes of the last domain that are not in the population.
    pub fn mailbox(&self, i: u64) -> Mailbox {
        let mut local = String::with_capacity(24);
        let (domain, preference) = self.mailbox_into(i, &mut local);
        Mailbox {
            local,
            domain,
            preference,
        }
    }

    /// Writes mailbox `i`'s local part into `local` (cleared first); returns its domain and
    /// preference.
    pub(crate) fn mailbox_into(&self, i: u64, local: &mut String) -> (usize, Preference) {
        let domain = self.domain_of(i);
        let mut rng = item_rng(self.inner.seed, STREAM_MAILBOX, i);
        let preference = self.preference(&mut rng);
        local.clear();
        self.local_part(domain, i - self.inner.starts[domain], &mut rng, local);
        (domain, preference)
    }

    /// `local@domain` of mailbox `i`, in canonical (lowercase) form.
    pub fn address(&self, i: u64) -> String {
        let mut out = String::with_capacity(48);
        let domain = self.mailbox_into(i, &mut out).0;
        out.push('@');
        out.push_str(&self.inner.names[domain]);
        out
    }

    /// The verdict a bulk RCPT to mailbox `i` gets, from its preference and its domain's
    /// regime; computed without building the local part.
    pub fn verdict(&self, i: u64) -> Verdict {
        let domain = self.domain_of(i);
        let mut rng = item_rng(self.inner.seed, STREAM_MAILBOX, i);
        self.preference(&mut rng)
            .verdict(self.inner.regimes[domain])
    }

    /// The local part of the mailbox with index `j` within domain `d` (module docs).
    fn local_part(&self, d: usize, j: u64, rng: &mut ItemRng, out: &mut String) {
        let component_offset = |template: u64, block: u64| {
            mix(
                fmix(self.inner.seed ^ (((d as u64) << 8) | template)),
                STREAM_LOCAL_OFFSET,
                block,
            )
        };
        let role_count = ROLES.len() as u64;
        if j < role_count && rng.random::<f64>() < ROLE_CHANCE {
            let offset = component_offset(0xff, 0);
            out.push_str(ROLES[affine(j, self.inner.role_multiplier, offset, role_count) as usize]);
            return;
        }

        let mut pick = rng.random_range(0..100u32);
        let template = TEMPLATES
            .iter()
            .find(|&&(_, weight)| {
                let hit = pick < weight;
                pick = pick.saturating_sub(weight);
                hit
            })
            .map_or(Template::FirstDotLast, |&(t, _)| t);
        let capacity = template.capacity();
        let (block, r) = (j / capacity, j % capacity);
        let slot = template.index();
        let c = affine(
            r,
            self.inner.multipliers[slot],
            component_offset(slot as u64, block),
            capacity,
        );

        let (f, l) = (FIRST.len() as u64, LAST.len() as u64);
        let first = |x: u64| FIRST[(x % f) as usize];
        let last = |x: u64| LAST[(x % l) as usize];
        let initial = |x: u64| char::from(b'a' + (x % LETTERS) as u8);
        // Templates without a built-in number show their block only when it is not 0;
        // templates ending in a number carry it as the hundreds: k*100 + two random digits.
        let block_suffix = |out: &mut String| {
            if block > 0 {
                let _ = write!(out, "{block}");
            }
        };
        let number = block.saturating_mul(100) + rng.random_range(0..100u64);
        match template {
            Template::FirstDotLast => {
                let _ = write!(out, "{}.{}", first(c), last(c / f));
                block_suffix(out);
            }
            Template::InitialLast => {
                out.push(initial(c));
                out.push_str(last(c / LETTERS));
                block_suffix(out);
            }
            Template::FirstNum => {
                let _ = write!(out, "{}{number}", first(c));
            }
            Template::FirstUnderscoreLastNum => {
                let _ = write!(out, "{}_{}{number}", first(c), last(c / f));
            }
            Template::WordNum => {
                let _ = write!(out, "{}{number}", WORDS[c as usize]);
            }
            Template::InitialDotLast => {
                let _ = write!(out, "{}.{}", initial(c), last(c / LETTERS));
                block_suffix(out);
            }
            Template::FirstMiddleLast => {
                let _ = write!(
                    out,
                    "{}.{}.{}",
                    first(c),
                    initial(c / f),
                    last(c / f / LETTERS)
                );
                block_suffix(out);
            }
            Template::FirstDashLast => {
                let _ = write!(out, "{}-{}", first(c), last(c / f));
                block_suffix(out);
            }
            Template::InitialsNum => {
                let _ = write!(out, "{}{}{number}", initial(c), initial(c / LETTERS));
            }
        }
    }

    /// Appends what `render` makes of each mailbox of `range` to `out`, in index order.
    fn render_lines<F>(&self, range: std::ops::Range<u64>, render: &F, out: &mut Vec<u8>)
    where
        F: Fn(MailboxEntry<'_>, &mut Vec<u8>),
    {
        let mut local = String::with_capacity(32);
        for i in range {
            let (domain, preference) = self.mailbox_into(i, &mut local);
            let entry = MailboxEntry {
                local: &local,
                domain: &self.inner.names[domain],
                regime: self.inner.regimes[domain],
                preference,
            };
            render(entry, out);
        }
    }

    /// Tasks of at most TASK_MAILBOXES mailboxes covering `range`, in order.
    fn tasks(range: std::ops::Range<u64>) -> Vec<std::ops::Range<u64>> {
        let mut tasks = Vec::new();
        let mut start = range.start;
        while start < range.end {
            let end = range.end.min(start + TASK_MAILBOXES);
            tasks.push(start..end);
            start = end;
        }
        tasks
    }

    /// The mailbox indexes in order, in batches of [`WRITE_BATCH_MAILBOXES`]: each batch is
    /// generated in parallel, then used in order, so memory stays bounded and the output
    /// does not depend on the number of threads.
    fn batches(&self) -> impl Iterator<Item = std::ops::Range<u64>> + use<> {
        let (total, size) = (self.inner.mailboxes, WRITE_BATCH_MAILBOXES);
        (0..total.div_ceil(size)).map(move |b| b * size..((b + 1) * size).min(total))
    }

    /// Builds the whole population (every mailbox, `default` ones included) for
    /// [`NormalizeConfig::default`]. Generation runs on the rayon pool.
    pub fn build(&self) -> Population {
        self.build_with_progress(|_| ())
    }

    /// [`build`](Self::build), calling `progress` with the number of mailboxes done after
    /// each batch (of 262,144).
    pub fn build_with_progress(&self, mut progress: impl FnMut(u64)) -> Population {
        let mut population = Population::new(NormalizeConfig::default());
        for (name, &regime) in self.inner.names.iter().zip(&self.inner.regimes) {
            population
                .add_domain(name.as_bytes(), regime)
                .expect("generated domain names are valid and unique (see module docs)");
        }
        for batch in self.batches() {
            let batch_end = batch.end;
            let entries: Vec<Vec<(String, Preference)>> = Self::tasks(batch)
                .into_par_iter()
                .map(|task| {
                    task.map(|i| {
                        let mut address = String::with_capacity(48);
                        let (domain, preference) = self.mailbox_into(i, &mut address);
                        address.push('@');
                        address.push_str(&self.inner.names[domain]);
                        (address, preference)
                    })
                    .collect()
                })
                .collect();
            for (address, preference) in entries.into_iter().flatten() {
                population
                    .add_mailbox(address.as_bytes(), preference)
                    .expect("generated addresses are valid and unique (see module docs)");
            }
            progress(batch_end);
        }
        population
    }

    /// Writes the population in the population file format (see `bulk_policy::population`):
    /// a comment line, the domains (`@domain<TAB>opt-in|opt-out`) by rank, then every
    /// mailbox (`local@domain<TAB>in|out|default`) by index. Lines are generated in parallel
    /// batches on the rayon pool and written in order, so the bytes do not depend on the
    /// number of threads; memory stays bounded whatever the population size.
    pub fn write_file(&self, w: impl Write) -> io::Result<()> {
        self.write_file_with_progress(w, |_| ())
    }

    /// [`write_file`](Self::write_file), calling `progress` with the number of mailboxes
    /// written after each batch.
    pub fn write_file_with_progress(
        &self,
        w: impl Write,
        progress: impl FnMut(u64),
    ) -> io::Result<()> {
        let mut w = io::BufWriter::with_capacity(1 << 16, w);
        writeln!(
            w,
            "# bulkbench synthetic population: seed {}, {} domains, {} mailboxes",
            self.inner.seed,
            self.domain_count(),
            self.inner.mailboxes
        )?;
        for (name, regime) in self.inner.names.iter().zip(&self.inner.regimes) {
            writeln!(w, "@{name}\t{}", regime.as_str())?;
        }
        self.write_mailboxes_with(
            &mut w,
            |entry, out| entry.write_population_line(out),
            progress,
        )?;
        w.flush()
    }

    /// Writes what `render` appends for each mailbox, in index order: the streaming
    /// generator behind [`write_file`](Self::write_file), for other formats of the same
    /// population. Mailboxes are rendered in parallel batches on the rayon pool and
    /// written in order, so the bytes do not depend on the number of threads, and memory
    /// stays bounded (one batch of 262,144 mailboxes' output) whatever the population
    /// size. Calls `progress` with the number of mailboxes written after each batch.
    pub fn write_mailboxes_with<F>(
        &self,
        mut w: impl Write,
        render: F,
        mut progress: impl FnMut(u64),
    ) -> io::Result<()>
    where
        F: Fn(MailboxEntry<'_>, &mut Vec<u8>) + Sync,
    {
        for batch in self.batches() {
            let batch_end = batch.end;
            let chunks: Vec<Vec<u8>> = Self::tasks(batch)
                .into_par_iter()
                .map(|task| {
                    let mut out = Vec::with_capacity((task.end - task.start) as usize * 40);
                    self.render_lines(task, &render, &mut out);
                    out
                })
                .collect();
            for chunk in chunks {
                w.write_all(&chunk)?;
            }
            progress(batch_end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Share;
    use std::collections::HashSet;

    fn config(mailboxes: u64, domains: u64, zipf: f64) -> PopulationConfig {
        PopulationConfig {
            mailboxes: mailboxes.try_into().unwrap(),
            domains: domains.try_into().unwrap(),
            domain_size_zipf: zipf.try_into().unwrap(),
            ..PopulationConfig::default()
        }
    }

    #[test]
    fn long_builds_report_progress_batch_by_batch() {
        let model = PopulationModel::new(&config(300_000, 50, 1.0), 9);
        let mut seen = Vec::new();
        let population = model.build_with_progress(|done| seen.push(done));
        assert_eq!(seen, [262_144, 300_000]);
        assert_eq!(population.mailbox_count(), 300_000);
        let mut written = Vec::new();
        let mut bytes = Vec::new();
        model
            .write_file_with_progress(&mut bytes, |done| written.push(done))
            .unwrap();
        assert_eq!(written, seen);
        // The same bytes as without a progress callback.
        let mut plain = Vec::new();
        model.write_file(&mut plain).unwrap();
        assert!(bytes == plain);
    }

    #[test]
    fn domain_sizes_follow_zipf_and_cover_every_mailbox() {
        for (m, d, s) in [
            (1000, 10, 1.0),
            (1000, 10, 0.0),
            (7, 7, 2.0),
            (5, 9, 1.0),
            (100_000, 200, 1.2),
        ] {
            let model = PopulationModel::new(&config(m, d, s), 3);
            let sizes: Vec<u64> = (0..model.domain_count())
                .map(|d| model.domain_size(d))
                .collect();
            assert_eq!(sizes.iter().sum::<u64>(), m);
            if m >= d {
                assert!(sizes.iter().all(|&n| n >= 1), "{sizes:?}");
            }
            if s == 0.0 {
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{sizes:?}");
            } else {
                assert!(sizes.windows(2).all(|w| w[0] + 1 >= w[1]), "{sizes:?}");
            }
            for i in 0..m {
                let dom = model.domain_of(i);
                assert!(model.inner.starts[dom] <= i && i < model.inner.starts[dom + 1]);
            }
        }
        let model = PopulationModel::new(&config(1000, 10, 1.0), 3);
        // Harmonic shares: rank 0 gets about 1/H(10) = 34% of the mailboxes.
        assert!(
            (330..=350).contains(&model.domain_size(0)),
            "{}",
            model.domain_size(0)
        );
    }

    #[test]
    fn local_parts_are_unique_in_big_domains() {
        // One domain of 120,000 mailboxes runs every template past its first block
        // (FirstNum holds 260 per block, InitialLast 26 * LAST).
        let model = PopulationModel::new(&config(120_000, 1, 1.0), 11);
        let mut seen = HashSet::new();
        for i in 0..model.mailbox_count() {
            let local = model.mailbox(i).local;
            assert!(
                !local.contains('+') && !local.contains("-nobody-"),
                "{local}"
            );
            assert!(
                local
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                "{local}"
            );
            assert!((2..=64).contains(&local.len()), "{local}");
            assert!(
                seen.insert(local.clone()),
                "duplicate local part {local} at {i}"
            );
        }
    }

    #[test]
    fn domain_names_are_unique_and_reserved() {
        let model = PopulationModel::new(&config(5000, 2000, 1.0), 5);
        let mut seen = HashSet::new();
        for d in 0..model.domain_count() {
            let (name, _) = model.domain(d);
            assert!(name.ends_with(".example"), "{name}");
            assert!(seen.insert(name.to_string()), "duplicate domain {name}");
        }
    }

    #[test]
    fn verdict_matches_preference_and_regime() {
        let model = PopulationModel::new(&config(5000, 20, 1.0), 8);
        for i in 0..model.mailbox_count() {
            let mailbox = model.mailbox(i);
            let (_, regime) = model.domain(mailbox.domain);
            assert_eq!(model.verdict(i), mailbox.preference.verdict(regime));
        }
    }

    #[test]
    fn shares_are_roughly_respected() {
        let cfg = PopulationConfig {
            explicit_share: Share::new(0.3).unwrap(),
            explicit_opt_in_share: Share::new(0.25).unwrap(),
            opt_in_domain_share: Share::new(0.5).unwrap(),
            ..config(20_000, 400, 1.0)
        };
        let model = PopulationModel::new(&cfg, 21);
        let prefs: Vec<Preference> = (0..20_000).map(|i| model.mailbox(i).preference).collect();
        let explicit = prefs.iter().filter(|&&p| p != Preference::Default).count() as f64;
        let opted_in = prefs.iter().filter(|&&p| p == Preference::In).count() as f64;
        assert!((explicit / 20_000.0 - 0.3).abs() < 0.02, "{explicit}");
        assert!((opted_in / explicit - 0.25).abs() < 0.03, "{opted_in}");
        let opt_in_domains = (0..400)
            .filter(|&d| model.domain(d).1 == Regime::OptIn)
            .count();
        assert!((150..=250).contains(&opt_in_domains), "{opt_in_domains}");
    }

    #[test]
    fn file_parses_to_the_built_population() {
        let model = PopulationModel::new(&config(3000, 25, 1.0), 4);
        let mut file = Vec::new();
        model.write_file(&mut file).unwrap();
        let parsed = Population::parse(&file, NormalizeConfig::default()).unwrap();
        let built = model.build();
        assert_eq!(parsed, built);
        assert_eq!(built.mailbox_count(), 3000);
        assert_eq!(built.domain_count(), 25);
        for i in (0..3000).step_by(7) {
            assert_eq!(
                built.verdict_of(model.address(i).as_bytes()),
                model.verdict(i)
            );
        }
    }

    /// Pins the generator: a change here changes every population of every seed, which
    /// invalidates saved traces and published reports. Update only on purpose.
    #[test]
    fn generator_is_pinned() {
        let model = PopulationModel::new(&config(1000, 10, 1.0), 1);
        let pinned: Vec<String> = (0..6).map(|i| model.address(i)).collect();
        assert_eq!(pinned, PINNED_ADDRESSES, "generator output changed");
    }

    const PINNED_ADDRESSES: [&str; 6] = [
        "comet52@alumni.institute.example",
        "support@alumni.institute.example",
        "felix.williams@alumni.institute.example",
        "i.guo@alumni.institute.example",
        "martha.peterson@alumni.institute.example",
        "samuel7@alumni.institute.example",
    ];
}
