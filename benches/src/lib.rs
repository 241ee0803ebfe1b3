//! Synthetic addresses for the benchmarks: deterministic, realistic-looking domains and
//! local parts drawn from splitmix64 streams seeded by (stream, index), shared by every
//! bench so they all measure the same population.
#![allow(missing_docs)] // an unpublished bench helper: the names say it

use bulk_policy::{NormalizeConfig, Population, PopulationError, Preference, Regime};

// Seed streams: one per kind of thing drawn.
pub const DOMAIN_STREAM: u64 = 1;
pub const MAILBOX_STREAM: u64 = 2;
pub const RECIPIENT_STREAM: u64 = 3;

/// splitmix64's output function (Steele, Lea, Flood 2014).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A tiny splitmix64 generator seeded by (stream, index, attempt) of the thing drawn.
pub struct SplitMix(pub u64);

// `next` is the generator's own name in the splitmix64 paper; this is not an Iterator.
#[allow(clippy::should_implement_trait)]
impl SplitMix {
    pub fn new(stream: u64, index: u64, attempt: u64) -> Self {
        SplitMix(mix(
            mix(stream.wrapping_mul(GAMMA) ^ index) ^ attempt.wrapping_mul(GAMMA)
        ))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is negligible here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
}

pub const FIRST: &[&str] = &[
    "anna", "ben", "carla", "david", "emma", "felix", "greta", "hugo", "ines", "jonas", "karin",
    "lukas", "maria", "noah", "olga", "paul", "quentin", "rosa", "sven", "tanja", "ulrich", "vera",
    "walter", "xenia", "yusuf", "zoe", "ahmed", "bianca", "chen", "dmitri", "elena", "fatima",
    "giovanni", "hana", "ivan", "julia", "kenji", "laura", "mohammed", "nina", "oscar", "priya",
    "rafael", "sofia", "thomas", "aylin", "wei", "yara", "alex", "marie", "jean", "pierre",
    "sarah", "michael", "jessica", "daniel", "emily", "james", "olivia", "lucas", "mia", "leon",
    "lena", "finn", "clara", "max", "hannah", "elias", "lea", "jan", "ida", "nils", "kai", "mila",
    "tim", "lina", "erik", "amelie", "tobias", "nora",
];

pub const LAST: &[&str] = &[
    "mueller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "koch",
    "richter",
    "klein",
    "wolf",
    "neumann",
    "schwarz",
    "braun",
    "zimmermann",
    "krueger",
    "hartmann",
    "lange",
    "werner",
    "krause",
    "lehmann",
    "koehler",
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "taylor",
    "moore",
    "martin",
    "lee",
    "thompson",
    "white",
    "harris",
    "clark",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "nguyen",
    "hill",
    "green",
    "adams",
    "baker",
    "nelson",
    "dubois",
    "lefebvre",
    "moreau",
    "laurent",
    "rossi",
    "russo",
    "ferrari",
    "esposito",
    "bianchi",
    "romano",
    "kowalski",
    "nowak",
    "novak",
    "horvat",
    "jensen",
    "hansen",
    "larsen",
    "andersson",
    "johansson",
    "virtanen",
    "tanaka",
    "suzuki",
    "kim",
    "park",
    "singh",
    "kumar",
    "silva",
    "santos",
    "oliveira",
    "costa",
    "yilmaz",
    "kaya",
    "ivanov",
    "petrov",
    "cohen",
];

pub const NICK: &[&str] = &[
    "sunny",
    "skywalker",
    "bluebird",
    "tiger",
    "dragon",
    "shadow",
    "pixel",
    "nomad",
    "rocket",
    "falcon",
    "maple",
    "coffee",
    "ninja",
    "wizard",
    "comet",
    "panda",
    "storm",
    "cosmo",
    "echo",
    "orbit",
    "zen",
    "lucky",
    "river",
    "fox",
    "bear",
    "wolfie",
    "hiker",
    "gamer",
    "chef",
];

pub const ROLE: &[&str] = &[
    "info",
    "contact",
    "office",
    "sales",
    "support",
    "billing",
    "hello",
    "team",
    "jobs",
    "press",
    "admin",
    "accounts",
    "service",
    "shop",
    "orders",
    "marketing",
    "hr",
    "events",
];

pub const DOMAIN_WORD: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark",
    "wayne",
    "tyrell",
    "cyberdyne",
    "soylent",
    "hooli",
    "pied",
    "piper",
    "vandelay",
    "wonka",
    "gringotts",
    "oceanic",
    "dunder",
    "mifflin",
    "sterling",
    "cooper",
    "blue",
    "green",
    "red",
    "north",
    "south",
    "east",
    "west",
    "alpha",
    "beta",
    "delta",
    "omega",
    "nova",
    "terra",
    "luna",
    "sol",
    "metro",
    "urban",
    "rural",
    "coast",
    "valley",
    "river",
    "lake",
    "mountain",
    "forest",
    "city",
    "net",
    "web",
    "cloud",
    "data",
    "mail",
    "post",
    "home",
    "family",
    "school",
    "uni",
    "bank",
    "shop",
    "store",
    "market",
    "media",
    "news",
    "radio",
    "tele",
    "phone",
    "mobile",
    "fast",
    "smart",
    "bright",
    "clear",
    "pure",
    "true",
    "prime",
    "first",
    "one",
    "union",
    "central",
    "global",
    "local",
    "swift",
];

pub const TLD: &[&str] = &[
    "com", "org", "net", "de", "fr", "it", "nl", "se", "ch", "at", "be", "pl", "es", "io", "co.uk",
    "com.au", "co.jp", "com.br", "ca", "eu",
];

/// A realistic domain name; `attempt` varies it when an earlier draw was taken.
pub fn domain_name(index: u64, attempt: u64) -> String {
    let mut rng = SplitMix::new(DOMAIN_STREAM, index, attempt);
    let (a, b, tld) = (rng.pick(DOMAIN_WORD), rng.pick(DOMAIN_WORD), rng.pick(TLD));
    let mut name = match rng.below(10) {
        0..=3 => format!("{a}{b}.{tld}"),
        4..=5 => format!("{a}-{b}.{tld}"),
        6 => format!("mail.{a}{b}.{tld}"),
        7 => format!("{a}.{tld}"),
        _ => format!("{a}{b}{}.{tld}", rng.below(100)),
    };
    // After a few collisions, the index makes it unique.
    if attempt >= 3 {
        name = format!("{a}{index}.{tld}");
    }
    name
}

/// A realistic local part: first.last, initials and digits, nicknames, role accounts.
pub fn local_part(rng: &mut SplitMix) -> String {
    let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
    let initial = &first[..1];
    match rng.below(20) {
        0..=5 => format!("{first}.{last}"),
        6 => format!("{first}_{last}"),
        7 => format!("{first}-{last}"),
        8..=9 => format!("{initial}.{last}"),
        10 => format!("{first}{last}"),
        11..=12 => {
            // Initials and digits: "jds1984", "ak42".
            let middle = if rng.percent(40) {
                &rng.pick(FIRST)[..1]
            } else {
                ""
            };
            let digits = if rng.percent(50) {
                1940 + rng.below(70)
            } else {
                rng.below(100)
            };
            format!("{initial}{middle}{}{digits}", &last[..1])
        }
        13..=14 => format!("{first}.{last}{}", rng.below(100)),
        15 => format!("{first}{}", 1950 + rng.below(60)),
        16 => format!("{last}.{first}"),
        17 => format!("{}{}", rng.pick(NICK), rng.below(1000)),
        18 => format!("{initial}{last}"),
        _ => {
            // Role accounts, sometimes departmental.
            let role = rng.pick(ROLE);
            if rng.percent(50) {
                format!("{role}.{}", rng.pick(DOMAIN_WORD))
            } else {
                role.to_string()
            }
        }
    }
}

/// The local part of mailbox `index`; `attempt` varies it when the draw is taken.
pub fn mailbox_local(index: u64, attempt: u64) -> String {
    let mut rng = SplitMix::new(MAILBOX_STREAM, index, attempt);
    let local = local_part(&mut rng);
    if attempt >= 4 {
        // Still taken after a few draws: the index makes it unique.
        format!("{local}.{index}")
    } else {
        local
    }
}

/// Mixed case as people type it: capitalized atoms ("Anna.Schmidt@Example.org"), or a
/// shouted domain.
pub fn mixed_case(address: &str, rng: &mut SplitMix) -> String {
    let (local, domain) = address.rsplit_once('@').expect("an address");
    let mut out = String::with_capacity(address.len());
    let mut start = true;
    for c in local.chars() {
        out.push(if start { c.to_ascii_uppercase() } else { c });
        start = matches!(c, '.' | '_' | '-');
    }
    out.push('@');
    if rng.percent(50) {
        out.push_str(&domain.to_ascii_uppercase());
    } else {
        let mut chars = domain.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out.extend(chars);
    }
    out
}

pub const TAGS: &[&str] = &[
    "news",
    "shop",
    "lists",
    "bank",
    "2024",
    "promo",
    "travel",
    "x",
    "spam",
    "newsletter",
];

pub fn with_tag(address: &str, rng: &mut SplitMix) -> String {
    let (local, domain) = address.rsplit_once('@').expect("an address");
    format!("{local}+{}@{domain}", rng.pick(TAGS))
}

/// A population of `domain_count` domains (45% opt-in) and `mailboxes` mailboxes (35% `in`,
/// 15% `out`, 50% `default`), every draw from its own (stream, index) generator; returns it
/// with the mailboxes' and domains' addresses as written.
pub fn build_population(
    domain_count: usize,
    mailboxes: usize,
) -> (Population, Vec<Box<str>>, Vec<Box<str>>) {
    let mut population = Population::new(NormalizeConfig::default());
    let mut domains = Vec::with_capacity(domain_count);
    for index in 0..domain_count as u64 {
        let regime = if SplitMix::new(DOMAIN_STREAM, index, u64::MAX).percent(45) {
            Regime::OptIn
        } else {
            Regime::OptOut
        };
        let name = (0..)
            .map(|attempt| domain_name(index, attempt))
            .find(|name| population.add_domain(name.as_bytes(), regime).is_ok())
            .expect("a free domain name");
        domains.push(name.into_boxed_str());
    }
    let mut addresses = Vec::with_capacity(mailboxes);
    for index in 0..mailboxes as u64 {
        let mut rng = SplitMix::new(MAILBOX_STREAM, index, u64::MAX);
        let domain = &domains[rng.below(domain_count as u64) as usize];
        let preference = match rng.below(100) {
            0..=34 => Preference::In,
            35..=49 => Preference::Out,
            _ => Preference::Default,
        };
        let mut attempt = 0;
        let address = loop {
            let address = format!("{}@{domain}", mailbox_local(index, attempt));
            match population.add_mailbox(address.as_bytes(), preference) {
                Ok(()) => break address,
                Err(PopulationError::DuplicateMailbox { .. }) => attempt += 1,
                Err(error) => panic!("generated mailbox {address} refused: {error}"),
            }
        };
        addresses.push(address.into_boxed_str());
    }
    (population, addresses, domains)
}
