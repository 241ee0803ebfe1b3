//! Populations: the served domains with their regimes and the mailboxes with their
//! preferences, built in code or read from a population file.
//!
//! # File format
//!
//! UTF-8 text, one entry a line (LF or CRLF), fields separated by one TAB, entries in any
//! order. Empty lines are ignored and `#` starts a comment only at the start of a line.
//!
//! ```text
//! # domains: @DOMAIN<TAB>opt-in|opt-out
//! @example.org<TAB>opt-in
//! @example.net<TAB>opt-out
//! # mailboxes: LOCAL@DOMAIN<TAB>in|out|default (split at the last '@')
//! ann@example.org<TAB>in
//! "Bob Smith"@example.net<TAB>out
//! carol@example.net<TAB>default
//! ```
//!
//! (`<TAB>` stands for one TAB character.)
//!
//! Addresses are printable ASCII, at most [`MAX_ADDRESS_LEN`] octets; spaces are allowed only
//! inside a quoted local part. Every mailbox's domain must be declared, no two entries may
//! share a normalized key, and no local part may contain the recipient delimiter (a lookup
//! would cut it off, so the mailbox could never be reached).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use memchr::{memchr, memrchr};
use rustc_hash::FxHashMap;

use crate::Verdict;
use crate::address::{AddressError, MAX_ADDRESS_LEN, NormalizeConfig, is_quoted};

/// What a served domain does with a mailbox that states no preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Regime {
    /// Bulk mail is refused unless the mailbox opted in (`opt-in` in a population file).
    OptIn,
    /// Bulk mail is accepted unless the mailbox opted out (`opt-out`).
    OptOut,
}

impl Regime {
    /// The verdict for a mailbox of this domain with no explicit preference.
    pub fn default_verdict(self) -> Verdict {
        match self {
            Regime::OptIn => Verdict::OptedOut,
            Regime::OptOut => Verdict::Accept,
        }
    }

    /// The word used in population files.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::OptIn => "opt-in",
            Regime::OptOut => "opt-out",
        }
    }

    /// The one byte the stores write for it (`i`, `o`): readable in each store's own
    /// tools (`mdb_dump`, `redis-cli`, `psql`).
    pub fn as_byte(self) -> u8 {
        match self {
            Regime::OptIn => b'i',
            Regime::OptOut => b'o',
        }
    }

    /// The regime of a stored byte, or `None` for a byte no store writes.
    pub fn from_byte(byte: u8) -> Option<Regime> {
        [Regime::OptIn, Regime::OptOut]
            .into_iter()
            .find(|r| r.as_byte() == byte)
    }

    /// The regime of a stored value: one byte, [`from_byte`](Self::from_byte).
    pub fn from_bytes(value: &[u8]) -> Option<Regime> {
        match value {
            [byte] => Regime::from_byte(*byte),
            _ => None,
        }
    }
}

/// A mailbox's own choice about bulk mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preference {
    /// Accepts bulk mail whatever the domain's regime (`in`).
    In,
    /// Refuses bulk mail whatever the domain's regime (`out`).
    Out,
    /// No explicit choice: the domain's regime decides (`default`).
    Default,
}

impl Preference {
    /// The verdict for a mailbox with this preference in a domain of `regime`.
    pub fn verdict(self, regime: Regime) -> Verdict {
        match self {
            Preference::In => Verdict::Accept,
            Preference::Out => Verdict::OptedOut,
            Preference::Default => regime.default_verdict(),
        }
    }

    /// The word used in population files.
    pub fn as_str(self) -> &'static str {
        match self {
            Preference::In => "in",
            Preference::Out => "out",
            Preference::Default => "default",
        }
    }

    /// The one byte the stores write for it (`i`, `o`, `d`).
    pub fn as_byte(self) -> u8 {
        match self {
            Preference::In => b'i',
            Preference::Out => b'o',
            Preference::Default => b'd',
        }
    }

    /// The preference of a stored byte, or `None` for a byte no store writes.
    pub fn from_byte(byte: u8) -> Option<Preference> {
        [Preference::In, Preference::Out, Preference::Default]
            .into_iter()
            .find(|p| p.as_byte() == byte)
    }

    /// The preference of a stored value: one byte, [`from_byte`](Self::from_byte).
    pub fn from_bytes(value: &[u8]) -> Option<Preference> {
        match value {
            [byte] => Preference::from_byte(*byte),
            _ => None,
        }
    }
}

/// What is wrong with one entry of a population (inside [`PopulationError::Malformed`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The line has no TAB between address and preference.
    #[error("missing TAB between address and preference")]
    MissingTab,
    /// A second TAB follows the preference.
    #[error("unexpected field after the preference (one TAB per line)")]
    TrailingField,
    /// Nothing follows the TAB.
    #[error("missing word after the TAB")]
    MissingWord,
    /// A domain line whose word is not `opt-in` or `opt-out`.
    #[error("unknown regime `{word}` (a domain takes opt-in or opt-out)")]
    UnknownRegime {
        /// The word found, printable and truncated.
        word: String,
    },
    /// A mailbox line whose word is not `in`, `out` or `default`.
    #[error("unknown preference `{word}` (a mailbox takes in, out or default)")]
    UnknownPreference {
        /// The word found, printable and truncated.
        word: String,
    },
    /// A byte outside printable ASCII, a space outside a quoted local part, or an `@` in a
    /// domain.
    #[error(
        "character {ch:?} is not allowed here (addresses are printable ASCII; spaces only \
         inside a quoted local part; no '@' in a domain)"
    )]
    ForbiddenChar {
        /// The offending character (U+FFFD if it was not UTF-8).
        ch: char,
    },
    /// A mailbox starting with `#` or `@` unquoted, which a file would read as a comment or a
    /// domain declaration.
    #[error("a local part starting with {marker:?} must be quoted (`\"{marker}...\"@domain`)")]
    LeadingMarker {
        /// The first character.
        marker: char,
    },
    /// The address is longer than [`MAX_ADDRESS_LEN`].
    #[error("address is {len} octets long, the limit is {MAX_ADDRESS_LEN}")]
    TooLong {
        /// Its length in octets.
        len: usize,
    },
    /// The domain is longer than [`MAX_DOMAIN_LEN`]: no mailbox of it could fit.
    #[error("domain is {len} octets long, the limit is {MAX_DOMAIN_LEN}")]
    DomainTooLong {
        /// Its length in octets.
        len: usize,
    },
    /// The address does not normalize (no `@`, empty local part or domain, bad quoting).
    #[error("{0}")]
    Address(#[from] AddressError),
}

/// Why a population could not be built.
///
/// `line` is 1-based; 0 means the entry came from [`Population::add_domain`] or
/// [`Population::add_mailbox`] rather than from a file, and the message then names no line.
#[derive(Debug, thiserror::Error)]
pub enum PopulationError {
    /// The population file could not be read.
    // The cause is the error's source, not part of its message, so that error chains
    // (anyhow's `{:#}`) do not print it twice.
    #[error("cannot read population file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not UTF-8 (`line` holds the first invalid byte).
    #[error("{}text is not valid UTF-8", Loc(*line))]
    NotUtf8 {
        /// Line of the first invalid byte.
        line: usize,
    },
    /// An entry breaks the format.
    #[error("{}malformed entry `{entry}`: {problem}", Loc(*line))]
    Malformed {
        /// Line of the entry.
        line: usize,
        /// The entry, printable and truncated.
        entry: String,
        /// What is wrong with it.
        problem: EntryError,
    },
    /// A mailbox whose domain is not declared anywhere in the population.
    #[error(
        "{}mailbox {address}: domain {domain} is not declared (add `@{domain}<TAB>opt-in` or \
         `opt-out`)",
        Loc(*line)
    )]
    UndeclaredDomain {
        /// Line of the mailbox (the first such line in a file).
        line: usize,
        /// The mailbox as written.
        address: String,
        /// Its domain, lowercased.
        domain: String,
    },
    /// Two mailboxes with the same key after normalization (`Ann@x` and `ann@x`).
    #[error(
        "{}mailbox {address} duplicates {}: both normalize to {key}",
        Loc(*line),
        Earlier(*first_line)
    )]
    DuplicateMailbox {
        /// Line of the second entry.
        line: usize,
        /// Line of the first entry.
        first_line: usize,
        /// The second entry's address as written.
        address: String,
        /// The shared normalized key.
        key: String,
    },
    /// A domain declared twice (after lowercasing).
    #[error("{}domain {domain} is declared twice (first on {})", Loc(*line), Earlier(*first_line))]
    DuplicateDomain {
        /// Line of the second declaration.
        line: usize,
        /// Line of the first declaration.
        first_line: usize,
        /// The domain, lowercased.
        domain: String,
    },
    /// A mailbox whose local part contains the recipient delimiter: lookups cut the local
    /// part there, so no lookup could ever reach it.
    #[error(
        "{}mailbox {address} can never be reached: its local part contains the recipient \
         delimiter {delimiter:?}, which lookups cut off",
        Loc(*line)
    )]
    UnreachableMailbox {
        /// Line of the mailbox.
        line: usize,
        /// The mailbox as written.
        address: String,
        /// The delimiter.
        delimiter: char,
    },
}

impl PopulationError {
    /// The 1-based line the error is about; 0 for programmatic entries and I/O errors.
    pub fn line(&self) -> usize {
        match self {
            PopulationError::Io { .. } => 0,
            PopulationError::NotUtf8 { line }
            | PopulationError::Malformed { line, .. }
            | PopulationError::UndeclaredDomain { line, .. }
            | PopulationError::DuplicateMailbox { line, .. }
            | PopulationError::DuplicateDomain { line, .. }
            | PopulationError::UnreachableMailbox { line, .. } => *line,
        }
    }
}

/// Longest declarable domain: a mailbox needs a local octet and the `@` within
/// [`MAX_ADDRESS_LEN`].
pub const MAX_DOMAIN_LEN: usize = MAX_ADDRESS_LEN - 2;

/// Longest excerpt of an entry quoted in an error, so a huge line cannot flood a log.
const SHOWN_MAX_CHARS: usize = 80;

/// `line N: `, or nothing for entries that did not come from a file.
struct Loc(usize);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            line => write!(f, "line {line}: "),
        }
    }
}

/// `line N`, or `an earlier entry` for entries that did not come from a file.
struct Earlier(usize);

impl fmt::Display for Earlier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("an earlier entry"),
            line => write!(f, "line {line}"),
        }
    }
}

/// `bytes` as text fit for an error message: control characters escaped, truncated.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_MAX_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The served domains and known mailboxes, with each mailbox's preference.
///
/// Keys are stored normalized with the population's [`NormalizeConfig`], so a backend built
/// from it must look addresses up with that same config ([`Population::normalize_config`]).
/// Invariants, kept by every constructor: every mailbox's domain is served, and every
/// mailbox key is a normalization fixed point that the delimiter did not cut.
#[derive(Clone, PartialEq, Eq)]
pub struct Population {
    normalize: NormalizeConfig,
    /// Lowercased domain -> regime.
    domains: FxHashMap<Box<[u8]>, Regime>,
    /// Normalized `local@domain` -> explicit preference.
    mailboxes: FxHashMap<Box<[u8]>, Preference>,
}

impl fmt::Debug for Population {
    // A population can hold millions of entries; a derived Debug would print them all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Population")
            .field("normalize", &self.normalize)
            .field("domains", &self.domains.len())
            .field("mailboxes", &self.mailboxes.len())
            .finish()
    }
}

impl Default for Population {
    fn default() -> Self {
        Population::new(NormalizeConfig::default())
    }
}

/// Lines of `text` with their 1-based numbers, CR of CRLF removed.
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = text;
    let mut number = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        number += 1;
        let (line, next) = match memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some((number, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

/// A line split into its two fields.
struct Entry<'a> {
    address: &'a [u8],
    word: &'a [u8],
}

/// Splits an entry line at its TAB. `None` for lines that carry no entry.
fn split_entry(line: &[u8]) -> Option<Result<Entry<'_>, EntryError>> {
    if matches!(line.first(), None | Some(b'#')) {
        return None;
    }
    let Some(tab) = memchr(b'\t', line) else {
        return Some(Err(EntryError::MissingTab));
    };
    let (address, word) = (&line[..tab], &line[tab + 1..]);
    Some(if memchr(b'\t', word).is_some() {
        Err(EntryError::TrailingField)
    } else if word.is_empty() {
        Err(EntryError::MissingWord)
    } else {
        Ok(Entry { address, word })
    })
}

fn forbidden_at(bytes: &[u8], i: usize) -> EntryError {
    let end = bytes.len().min(i + 4);
    let ch = String::from_utf8_lossy(&bytes[i..end])
        .chars()
        .next()
        .unwrap_or('\u{FFFD}');
    EntryError::ForbiddenChar { ch }
}

/// Checks a domain as declared (without its `@`) and returns it lowercased.
fn check_domain(domain: &[u8]) -> Result<Box<[u8]>, EntryError> {
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain.into());
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(EntryError::DomainTooLong { len: domain.len() });
    }
    if let Some(i) = domain
        .iter()
        .position(|&b| !(0x21..=0x7e).contains(&b) || b == b'@')
    {
        return Err(forbidden_at(domain, i));
    }
    Ok(domain.to_ascii_lowercase().into_boxed_slice())
}

/// Checks a mailbox's length and bytes (normalization checks its structure).
fn check_mailbox_bytes(address: &[u8]) -> Result<(), EntryError> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(EntryError::TooLong { len: address.len() });
    }
    // Only `add_mailbox` can meet these: in a file, such a line is a comment or a domain.
    if let Some(&marker @ (b'#' | b'@')) = address.first() {
        return Err(EntryError::LeadingMarker {
            marker: char::from(marker),
        });
    }
    // Spaces are legal only inside a quoted local part (RFC 5321 4.1.2 qtextSMTP); the file
    // format allows them there because TAB, not space, separates fields.
    let quoted_local = memrchr(b'@', address)
        .map(|at| &address[..at])
        .filter(|local| is_quoted(local))
        .map_or(0, |local| local.len());
    let bad = address
        .iter()
        .enumerate()
        .position(|(i, &b)| !((0x21..=0x7e).contains(&b) || (b == b' ' && i < quoted_local)));
    match bad {
        Some(i) => Err(forbidden_at(address, i)),
        None => Ok(()),
    }
}

fn parse_regime(word: &[u8]) -> Result<Regime, EntryError> {
    match word {
        b"opt-in" => Ok(Regime::OptIn),
        b"opt-out" => Ok(Regime::OptOut),
        _ => Err(EntryError::UnknownRegime { word: shown(word) }),
    }
}

fn parse_preference(word: &[u8]) -> Result<Preference, EntryError> {
    match word {
        b"in" => Ok(Preference::In),
        b"out" => Ok(Preference::Out),
        b"default" => Ok(Preference::Default),
        _ => Err(EntryError::UnknownPreference { word: shown(word) }),
    }
}

/// Line of the first declaration of `domain` (error path only: rescans the text, so the
/// parser need not store a line number per entry).
fn first_domain_line(text: &[u8], domain: &[u8]) -> usize {
    lines(text)
        .find(|(_, line)| {
            line.strip_prefix(b"@")
                .and_then(|rest| Some(&rest[..memchr(b'\t', rest)?]))
                .is_some_and(|declared| declared.eq_ignore_ascii_case(domain))
        })
        .map_or(0, |(number, _)| number)
}

fn malformed(line: usize, entry: &[u8], problem: EntryError) -> PopulationError {
    PopulationError::Malformed {
        line,
        entry: shown(entry),
        problem,
    }
}

impl Population {
    /// An empty population whose keys are normalized with `normalize`.
    pub fn new(normalize: NormalizeConfig) -> Self {
        Population {
            normalize,
            domains: FxHashMap::default(),
            mailboxes: FxHashMap::default(),
        }
    }

    /// Declares `domain` (no `@`; any case) as served, under `regime`.
    ///
    /// Validated as a population file's domain line is; errors carry line 0.
    pub fn add_domain(&mut self, domain: &[u8], regime: Regime) -> Result<(), PopulationError> {
        self.insert_domain(0, domain, regime)
    }

    /// Adds a mailbox (`local@domain`, as it would appear in a population file) with an
    /// explicit preference. Its domain must already be declared.
    ///
    /// Validated as a population file's mailbox line is; errors carry line 0.
    pub fn add_mailbox(
        &mut self,
        address: &[u8],
        preference: Preference,
    ) -> Result<(), PopulationError> {
        let mut key = Vec::new();
        self.insert_mailbox(0, address, preference, &mut key)
    }

    fn insert_domain(
        &mut self,
        line: usize,
        domain: &[u8],
        regime: Regime,
    ) -> Result<(), PopulationError> {
        let key = check_domain(domain).map_err(|e| {
            let mut entry = b"@".to_vec();
            entry.extend_from_slice(domain);
            malformed(line, &entry, e)
        })?;
        if self.domains.contains_key(&key) {
            return Err(PopulationError::DuplicateDomain {
                line,
                first_line: 0,
                domain: shown(&key),
            });
        }
        self.domains.insert(key, regime);
        Ok(())
    }

    /// Validates and inserts one mailbox; `key` is scratch space reused across lines.
    fn insert_mailbox(
        &mut self,
        line: usize,
        address: &[u8],
        preference: Preference,
        key: &mut Vec<u8>,
    ) -> Result<(), PopulationError> {
        check_mailbox_bytes(address).map_err(|e| malformed(line, address, e))?;
        key.clear();
        let normalized = self
            .normalize
            .normalize_parts(address, key)
            .map_err(|e| malformed(line, address, e.into()))?;
        if normalized.cut
            && let Some(delimiter) = self.normalize.recipient_delimiter
        {
            return Err(PopulationError::UnreachableMailbox {
                line,
                address: shown(address),
                delimiter: char::from(delimiter),
            });
        }
        let domain = &key[normalized.at + 1..];
        if !self.domains.contains_key(domain) {
            return Err(PopulationError::UndeclaredDomain {
                line,
                address: shown(address),
                domain: shown(domain),
            });
        }
        if self.mailboxes.contains_key(key.as_slice()) {
            return Err(PopulationError::DuplicateMailbox {
                line,
                first_line: 0,
                address: shown(address),
                key: shown(key),
            });
        }
        self.mailboxes.insert(key.as_slice().into(), preference);
        Ok(())
    }

    /// Parses a population file (see the [module docs](self) for the format).
    ///
    /// Errors in domain lines are reported first, since every mailbox check depends on the
    /// declarations; otherwise the first error in file order is reported.
    pub fn parse(text: &[u8], normalize: NormalizeConfig) -> Result<Population, PopulationError> {
        if let Err(e) = std::str::from_utf8(text) {
            let line = 1 + memchr::memchr_iter(b'\n', &text[..e.valid_up_to()]).count();
            return Err(PopulationError::NotUtf8 { line });
        }
        let mut population = Population::new(normalize);

        // Entries come in any order, so domains are read in a first pass and mailboxes,
        // which must name a declared domain, in a second.
        for (number, line) in lines(text) {
            if line.first() != Some(&b'@') {
                continue;
            }
            let entry = match split_entry(line) {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(malformed(number, line, e)),
                None => continue,
            };
            let regime = parse_regime(entry.word).map_err(|e| malformed(number, line, e))?;
            match population.insert_domain(number, &entry.address[1..], regime) {
                Err(PopulationError::DuplicateDomain { domain, .. }) => {
                    return Err(PopulationError::DuplicateDomain {
                        line: number,
                        first_line: first_domain_line(text, &entry.address[1..]),
                        domain,
                    });
                }
                Err(PopulationError::Malformed { problem, .. }) => {
                    return Err(malformed(number, line, problem));
                }
                other => other?,
            }
        }

        // One map slot per line is an upper bound that spares rehashing a large file.
        let line_count = memchr::memchr_iter(b'\n', text).count() + 1;
        population
            .mailboxes
            .reserve(line_count.saturating_sub(population.domains.len()));
        let mut key = Vec::with_capacity(MAX_ADDRESS_LEN);
        for (number, line) in lines(text) {
            if line.first() == Some(&b'@') {
                continue;
            }
            let entry = match split_entry(line) {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(malformed(number, line, e)),
                None => continue,
            };
            let preference =
                parse_preference(entry.word).map_err(|e| malformed(number, line, e))?;
            match population.insert_mailbox(number, entry.address, preference, &mut key) {
                Err(PopulationError::DuplicateMailbox { address, key, .. }) => {
                    return Err(PopulationError::DuplicateMailbox {
                        line: number,
                        first_line: population.first_mailbox_line(text, entry.address),
                        address,
                        key,
                    });
                }
                Err(PopulationError::Malformed { problem, .. }) => {
                    return Err(malformed(number, line, problem));
                }
                other => other?,
            }
        }
        population.mailboxes.shrink_to_fit();
        Ok(population)
    }

    /// Line of the first mailbox whose key equals `address`'s (error path only: rescans the
    /// text, so the parser need not store a line number per entry).
    fn first_mailbox_line(&self, text: &[u8], address: &[u8]) -> usize {
        let (mut wanted, mut candidate) = (Vec::new(), Vec::new());
        if self.normalize.normalize_into(address, &mut wanted).is_err() {
            return 0;
        }
        lines(text)
            .filter(|(_, line)| line.first() != Some(&b'@'))
            .filter_map(|(number, line)| Some((number, split_entry(line)?.ok()?)))
            .find(|(_, entry)| {
                self.normalize
                    .normalize_into(entry.address, &mut candidate)
                    .is_ok()
                    && candidate == wanted
            })
            .map_or(0, |(number, _)| number)
    }

    /// Reads and parses the population file at `path`.
    pub fn load(path: &Path, normalize: NormalizeConfig) -> Result<Population, PopulationError> {
        let text = std::fs::read(path).map_err(|source| PopulationError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Population::parse(&text, normalize)
    }

    /// The config the keys were normalized with.
    pub fn normalize_config(&self) -> NormalizeConfig {
        self.normalize
    }

    /// Number of served domains.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Number of mailboxes with an entry (explicit preference or `default`).
    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.len()
    }

    /// The served domains (lowercased) with their regimes, in no particular order.
    pub fn domains(&self) -> impl Iterator<Item = (&[u8], Regime)> {
        self.domains.iter().map(|(k, v)| (&**k, *v))
    }

    /// The mailboxes by normalized key, with their preferences, in no particular order.
    pub fn mailboxes(&self) -> impl Iterator<Item = (&[u8], Preference)> {
        self.mailboxes.iter().map(|(k, v)| (&**k, *v))
    }

    /// The regime of `domain` (already lowercase), or `None` if it is not served.
    pub fn regime(&self, domain: &[u8]) -> Option<Regime> {
        self.domains.get(domain).copied()
    }

    /// Reference semantics of a lookup (slow path for tests and generators): normalize,
    /// then explicit In -> Accept, Out -> OptedOut, Default -> the regime (OptIn ->
    /// OptedOut, OptOut -> Accept); no such mailbox in a served domain -> UnknownMailbox;
    /// domain not served -> NotLocal (also for an address that does not normalize).
    pub fn verdict_of(&self, address: &[u8]) -> Verdict {
        let mut key = Vec::new();
        let Ok(at) = self.normalize.normalize_into(address, &mut key) else {
            return Verdict::NotLocal;
        };
        let Some(regime) = self.regime(&key[at + 1..]) else {
            return Verdict::NotLocal;
        };
        match self.mailboxes.get(key.as_slice()) {
            Some(preference) => preference.verdict(regime),
            None => Verdict::UnknownMailbox,
        }
    }

    /// Writes the population in the file format: domains first, then mailboxes, each group
    /// sorted by key, so equal populations give identical bytes. `parse` of the output with
    /// the same config returns an equal population.
    ///
    /// Mailboxes are written by key; a local part containing a space or starting with `#` or
    /// `@` is written quoted (escaping only `\`, so the entry is never longer than the one it
    /// came from).
    pub fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(w);
        let mut domains: Vec<_> = self.domains().collect();
        domains.sort_unstable_by_key(|&(domain, _)| domain);
        for (domain, regime) in domains {
            w.write_all(b"@")?;
            w.write_all(domain)?;
            writeln!(w, "\t{}", regime.as_str())?;
        }
        let mut mailboxes: Vec<_> = self.mailboxes().collect();
        mailboxes.sort_unstable_by_key(|&(key, _)| key);
        for (key, preference) in mailboxes {
            let at = memrchr(b'@', key).unwrap_or(key.len());
            let (local, domain) = key.split_at(at);
            // Quoting is needed for a space, and for a leading `#` or `@` (the line would read
            // as a comment or a domain). Such keys came from a quoted entry (the parser and
            // `add_mailbox` refuse them unquoted), so the quoted form is no longer than it.
            if memchr(b' ', local).is_some() || matches!(local.first(), Some(b'#' | b'@')) {
                w.write_all(b"\"")?;
                for part in local.split_inclusive(|&b| b == b'\\') {
                    w.write_all(part)?;
                    if part.ends_with(b"\\") {
                        w.write_all(b"\\")?;
                    }
                }
                w.write_all(b"\"")?;
            } else {
                w.write_all(local)?;
            }
            w.write_all(domain)?;
            writeln!(w, "\t{}", preference.as_str())?;
        }
        w.flush()
    }

    /// Splits the population into its config, domain map and mailbox map, for backends that
    /// take ownership of the keys rather than copying them.
    #[allow(clippy::type_complexity)] // the signature the backends were written against
    pub fn into_parts(
        self,
    ) -> (
        NormalizeConfig,
        FxHashMap<Box<[u8]>, Regime>,
        FxHashMap<Box<[u8]>, Preference>,
    ) {
        (self.normalize, self.domains, self.mailboxes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_round_trip_and_refuse_what_no_store_writes() {
        for regime in [Regime::OptIn, Regime::OptOut] {
            assert_eq!(Regime::from_byte(regime.as_byte()), Some(regime));
            assert_eq!(Regime::from_bytes(&[regime.as_byte()]), Some(regime));
        }
        for preference in [Preference::In, Preference::Out, Preference::Default] {
            assert_eq!(
                Preference::from_byte(preference.as_byte()),
                Some(preference)
            );
            assert_eq!(
                Preference::from_bytes(&[preference.as_byte()]),
                Some(preference)
            );
        }
        assert_eq!(Regime::from_byte(b'd'), None);
        assert_eq!(Preference::from_byte(0), None);
        assert_eq!(Preference::from_bytes(b"in"), None);
        assert_eq!(Regime::from_bytes(b""), None);
    }
    use proptest::prelude::*;

    const CASE_SENSITIVE: NormalizeConfig = NormalizeConfig {
        fold_local_case: false,
        recipient_delimiter: Some(b'+'),
    };

    fn parse(text: &str) -> Result<Population, String> {
        Population::parse(text.as_bytes(), NormalizeConfig::default()).map_err(|e| e.to_string())
    }

    /// Domains and mailboxes as sorted (text, word) pairs, for readable comparisons.
    type Entries = (Vec<(String, Regime)>, Vec<(String, Preference)>);

    fn entries(p: &Population) -> Entries {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut domains: Vec<_> = p.domains().map(|(d, r)| (text(d), r)).collect();
        let mut mailboxes: Vec<_> = p.mailboxes().map(|(m, pr)| (text(m), pr)).collect();
        domains.sort_by(|a, b| a.0.cmp(&b.0));
        mailboxes.sort_by(|a, b| a.0.cmp(&b.0));
        (domains, mailboxes)
    }

    #[test]
    fn parse_accepts() {
        use Preference::*;
        use Regime::*;
        type Expected = (
            &'static [(&'static str, Regime)],
            &'static [(&'static str, Preference)],
        );
        let cases: &[(&str, Expected)] = &[
            ("", (&[], &[])),
            ("\n\r\n# only a comment\n", (&[], &[])),
            ("@x.org\topt-in", (&[("x.org", OptIn)], &[])),
            (
                "ann@X.org\tin\r\n@X.Org\topt-out\r\n",
                (&[("x.org", OptOut)], &[("ann@x.org", In)]),
            ),
            (
                "# header\n@x.org\topt-in\n\nAnn@x.org\tout\nbob@x.org\tdefault\n#c@x.org\tin\n",
                (
                    &[("x.org", OptIn)],
                    &[("ann@x.org", Out), ("bob@x.org", Default)],
                ),
            ),
            (
                "@x.org\topt-in\n\"Ann Smith\"@x.org\tin\n\"b\\\\c\"@x.org\tout\n+ops@x.org\tin\n",
                (
                    &[("x.org", OptIn)],
                    &[
                        ("+ops@x.org", In),
                        ("ann smith@x.org", In),
                        ("b\\c@x.org", Out),
                    ],
                ),
            ),
            // `a@b` as a local part: split at the last '@'.
            (
                "@x.org\topt-in\na@b@x.org\tin",
                (&[("x.org", OptIn)], &[("a@b@x.org", In)]),
            ),
            // A comment only at the start of a line: `#` elsewhere is data.
            (
                "@x.org\topt-in\na#b@x.org\tin",
                (&[("x.org", OptIn)], &[("a#b@x.org", In)]),
            ),
        ];
        for (text, (domains, mailboxes)) in cases {
            let population = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let own = |v: &[(&str, _)]| v.iter().map(|(s, x)| (s.to_string(), *x)).collect();
            let own_m = |v: &[(&str, _)]| v.iter().map(|(s, x)| (s.to_string(), *x)).collect();
            assert_eq!(
                entries(&population),
                (own(domains), own_m(mailboxes)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parse_rejects() {
        let long_local = "a".repeat(MAX_ADDRESS_LEN - 5);
        let too_long = format!("@x.org\topt-in\n{long_local}@x.org\tin\n");
        let long_domain = format!("@{}\topt-in\n", "d".repeat(MAX_DOMAIN_LEN + 1));
        let cases: &[(&[u8], &str)] = &[
            (
                b"@x.org\topt-in\nann@x.org\tin\n\xff\n",
                "line 3: text is not valid UTF-8",
            ),
            (
                b"ann@x.org in\n",
                "line 1: malformed entry `ann@x.org in`: missing TAB between address and preference",
            ),
            (
                b"@x.org\n",
                "line 1: malformed entry `@x.org`: missing TAB between address and preference",
            ),
            (
                b"@x.org\topt-in\nann@x.org\tin\tx\n",
                "line 2: malformed entry `ann@x.org\\tin\\tx`: unexpected field after the preference (one TAB per line)",
            ),
            (
                b"@x.org\topt-in\nann@x.org\t\n",
                "line 2: malformed entry `ann@x.org\\t`: missing word after the TAB",
            ),
            (
                b"@x.org\topt-in\nann@x.org\tyes\n",
                "line 2: malformed entry `ann@x.org\\tyes`: unknown preference `yes` (a mailbox takes in, out or default)",
            ),
            (
                b"@x.org\topt-in\nann@x.org\tin \n",
                "line 2: malformed entry `ann@x.org\\tin `: unknown preference `in ` (a mailbox takes in, out or default)",
            ),
            (
                b"@x.org\topt-in\nann@x.org\topt-in\n",
                "line 2: malformed entry `ann@x.org\\topt-in`: unknown preference `opt-in` (a mailbox takes in, out or default)",
            ),
            (
                b"@x.org\tin\n",
                "line 1: malformed entry `@x.org\\tin`: unknown regime `in` (a domain takes opt-in or opt-out)",
            ),
            (
                b"@\topt-in\n",
                "line 1: malformed entry `@\\topt-in`: address has an empty domain",
            ),
            (
                b"@x@y\topt-in\n",
                "line 1: malformed entry `@x@y\\topt-in`: character '@' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                b"@x y\topt-in\n",
                "line 1: malformed entry `@x y\\topt-in`: character ' ' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                b"@x.org\topt-in\nann smith@x.org\tin\n",
                "line 2: malformed entry `ann smith@x.org\\tin`: character ' ' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                b"@x.org\topt-in\n\"ann\"@x y.org\tin\n",
                "line 2: malformed entry `\"ann\"@x y.org\\tin`: character ' ' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                "@x.org\topt-in\nannë@x.org\tin\n".as_bytes(),
                "line 2: malformed entry `annë@x.org\\tin`: character 'ë' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                b"@x.org\topt-in\nan\x01n@x.org\tin\n",
                "line 2: malformed entry `an\\u{1}n@x.org\\tin`: character '\\u{1}' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                b"@x.org\topt-in\nann@x.org\rx\tin\n",
                "line 2: malformed entry `ann@x.org\\rx\\tin`: character '\\r' is not allowed here (addresses are printable ASCII; spaces only inside a quoted local part; no '@' in a domain)",
            ),
            (
                b"@x.org\topt-in\nann\tin\n",
                "line 2: malformed entry `ann\\tin`: address has no '@'",
            ),
            (
                b"@x.org\topt-in\n@\tin\n",
                "line 2: malformed entry `@\\tin`: unknown regime `in` (a domain takes opt-in or opt-out)",
            ),
            (
                b"@x.org\topt-in\n\"\"@x.org\tin\n",
                "line 2: malformed entry `\"\"@x.org\\tin`: address has an empty local part",
            ),
            (
                b"@x.org\topt-in\nann@\tin\n",
                "line 2: malformed entry `ann@\\tin`: address has an empty domain",
            ),
            (
                b"@x.org\topt-in\n\"ann\\\"@x.org\tin\n",
                "line 2: malformed entry `\"ann\\\"@x.org\\tin`: quoted local part ends in a backslash that escapes its closing quote",
            ),
            (
                b"@x.org\topt-in\n\"\\\"a\\\"\"@x.org\tin\n",
                "line 2: malformed entry `\"\\\"a\\\"\"@x.org\\tin`: local part is still enclosed in quotes after unquoting",
            ),
            (
                too_long.as_bytes(),
                "line 2: malformed entry `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...`: address is 255 octets long, the limit is 254",
            ),
            (
                long_domain.as_bytes(),
                "line 1: malformed entry `@ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd...`: domain is 253 octets long, the limit is 252",
            ),
            (
                b"@x.org\topt-in\nann@y.org\tin\nbob@y.org\tin\n",
                "line 2: mailbox ann@y.org: domain y.org is not declared (add `@y.org<TAB>opt-in` or `opt-out`)",
            ),
            (
                b"@x.org\topt-in\nann@Y.Org\tin\n",
                "line 2: mailbox ann@Y.Org: domain y.org is not declared (add `@y.org<TAB>opt-in` or `opt-out`)",
            ),
            (
                b"@x.org\topt-in\nAnn@x.org\tin\n# gap\nann.x@x.org\tout\nann@X.ORG\tout\n",
                "line 5: mailbox ann@X.ORG duplicates line 2: both normalize to ann@x.org",
            ),
            (
                b"@x.org\topt-in\n\"ann\"@x.org\tin\nann@x.org\tout\n",
                "line 3: mailbox ann@x.org duplicates line 2: both normalize to ann@x.org",
            ),
            (
                b"@x.org\topt-in\nann@x.org\tin\n@X.ORG\topt-out\n",
                "line 3: domain x.org is declared twice (first on line 1)",
            ),
            (
                b"@x.org\topt-in\nann+news@x.org\tin\n",
                "line 2: mailbox ann+news@x.org can never be reached: its local part contains the recipient delimiter '+', which lookups cut off",
            ),
            (
                b"@x.org\topt-in\n\"ann+news\"@x.org\tin\n",
                "line 2: mailbox \"ann+news\"@x.org can never be reached: its local part contains the recipient delimiter '+', which lookups cut off",
            ),
            // Domain lines are checked first, whatever their position.
            (
                b"@x.org\topt-in\nann\tin\n@y.org\topt-maybe\n",
                "line 3: malformed entry `@y.org\\topt-maybe`: unknown regime `opt-maybe` (a domain takes opt-in or opt-out)",
            ),
        ];
        for (text, expected) in cases {
            let got =
                Population::parse(text, NormalizeConfig::default()).map_err(|e| e.to_string());
            assert_eq!(
                got.err().as_deref(),
                Some(*expected),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn line_numbers() {
        let e = Population::parse(b"\n\n@x.org\tnope\n", NormalizeConfig::default()).unwrap_err();
        assert_eq!(e.line(), 3);
        assert!(matches!(
            e,
            PopulationError::Malformed {
                problem: EntryError::UnknownRegime { .. },
                ..
            }
        ));
    }

    #[test]
    fn case_sensitive_keys_differ_by_case() {
        let text = b"@X.org\topt-in\nAnn@x.org\tin\nann@x.org\tout\n";
        let population = Population::parse(text, CASE_SENSITIVE).unwrap();
        assert_eq!(population.mailbox_count(), 2);
        assert_eq!(population.verdict_of(b"Ann@X.ORG"), Verdict::Accept);
        assert_eq!(population.verdict_of(b"ann@x.org"), Verdict::OptedOut);
        assert_eq!(population.verdict_of(b"ANN@x.org"), Verdict::UnknownMailbox);
    }

    #[test]
    fn no_delimiter_allows_plus_in_local_parts() {
        let config = NormalizeConfig {
            fold_local_case: true,
            recipient_delimiter: None,
        };
        let population =
            Population::parse(b"@x.org\topt-out\nann+news@x.org\tout\n", config).unwrap();
        assert_eq!(population.verdict_of(b"ann+news@x.org"), Verdict::OptedOut);
        assert_eq!(population.verdict_of(b"ann@x.org"), Verdict::UnknownMailbox);
    }

    #[test]
    fn programmatic_building_validates_like_the_parser() {
        let mut p = Population::default();
        let err = |r: Result<(), PopulationError>| r.map_err(|e| e.to_string()).err();
        assert_eq!(err(p.add_mailbox(b"ann@x.org", Preference::In)), Some("mailbox ann@x.org: domain x.org is not declared (add `@x.org<TAB>opt-in` or `opt-out`)".into()));
        assert_eq!(err(p.add_domain(b"X.org", Regime::OptIn)), None);
        assert_eq!(
            err(p.add_domain(b"x.ORG", Regime::OptOut)),
            Some("domain x.org is declared twice (first on an earlier entry)".into())
        );
        assert_eq!(
            err(p.add_domain(b"", Regime::OptOut)),
            Some("malformed entry `@`: address has an empty domain".into())
        );
        assert_eq!(err(p.add_mailbox(b"ann@x.org", Preference::In)), None);
        assert_eq!(
            err(p.add_mailbox(b"ANN@x.org", Preference::Out)),
            Some(
                "mailbox ANN@x.org duplicates an earlier entry: both normalize to ann@x.org".into()
            )
        );
        assert_eq!(err(p.add_mailbox(b"bob+x@x.org", Preference::Out)), Some("mailbox bob+x@x.org can never be reached: its local part contains the recipient delimiter '+', which lookups cut off".into()));
        assert_eq!(
            err(p.add_mailbox(b"bob", Preference::Out)),
            Some("malformed entry `bob`: address has no '@'".into())
        );
        assert_eq!(err(p.add_mailbox(b"#bob@x.org", Preference::Out)), Some("malformed entry `#bob@x.org`: a local part starting with '#' must be quoted (`\"#...\"@domain`)".into()));
        assert_eq!(err(p.add_mailbox(b"@b@x.org", Preference::Out)), Some("malformed entry `@b@x.org`: a local part starting with '@' must be quoted (`\"@...\"@domain`)".into()));
        assert_eq!(err(p.add_mailbox(b"\"#bob\"@x.org", Preference::Out)), None);
        assert_eq!((p.domain_count(), p.mailbox_count()), (1, 2));
        assert_eq!(p.regime(b"x.org"), Some(Regime::OptIn));
        assert_eq!(p.regime(b"y.org"), None);
    }

    #[test]
    fn verdict_of_table() {
        let text = "@in.org\topt-in\n@out.org\topt-out\n\
                    a@in.org\tin\nb@in.org\tout\nc@in.org\tdefault\n\
                    a@out.org\tin\nb@out.org\tout\nc@out.org\tdefault\n";
        let p = parse(text).unwrap();
        let cases: &[(&str, Verdict)] = &[
            ("a@in.org", Verdict::Accept),
            ("b@in.org", Verdict::OptedOut),
            ("c@in.org", Verdict::OptedOut),
            ("a@out.org", Verdict::Accept),
            ("b@out.org", Verdict::OptedOut),
            ("c@out.org", Verdict::Accept),
            ("C+x@OUT.org", Verdict::Accept),
            ("d@in.org", Verdict::UnknownMailbox),
            ("d@out.org", Verdict::UnknownMailbox),
            ("a@other.org", Verdict::NotLocal),
            ("a@", Verdict::NotLocal),
            ("\"\"@in.org", Verdict::NotLocal),
        ];
        for (address, expected) in cases {
            assert_eq!(p.verdict_of(address.as_bytes()), *expected, "{address}");
        }
    }

    #[test]
    fn write_to_is_sorted_and_round_trips() {
        let text = "b@x.org\tout\n@y.net\topt-out\n\"Ann Smith\"@x.org\tin\n@x.org\topt-in\n\
                    \"q\\\\ z\"@y.net\tdefault\n\"Bob\"@y.net\tin\n";
        let p = parse(text).unwrap();
        let mut out = Vec::new();
        p.write_to(&mut out).unwrap();
        let written = String::from_utf8(out).unwrap();
        assert_eq!(
            written,
            "@x.org\topt-in\n@y.net\topt-out\n\"ann smith\"@x.org\tin\nb@x.org\tout\n\
             bob@y.net\tin\n\"q\\\\ z\"@y.net\tdefault\n"
        );
        assert_eq!(parse(&written).unwrap(), p);
    }

    #[test]
    fn load_names_the_path() {
        let path = std::path::Path::new("/nonexistent/bulk-policy/population.tsv");
        let e = Population::load(path, NormalizeConfig::default()).unwrap_err();
        let message = e.to_string();
        assert!(
            message
                .starts_with("cannot read population file /nonexistent/bulk-policy/population.tsv"),
            "{message}"
        );
        assert_eq!(e.line(), 0);
    }

    #[test]
    fn debug_prints_counts_not_entries() {
        let p = parse("@x.org\topt-in\nann@x.org\tin\n").unwrap();
        assert_eq!(
            format!("{p:?}"),
            "Population { normalize: NormalizeConfig { fold_local_case: true, recipient_delimiter: Some(43) }, domains: 1, mailboxes: 1 }"
        );
    }

    fn any_config() -> impl Strategy<Value = NormalizeConfig> {
        (
            any::<bool>(),
            prop::option::of(prop_oneof![Just(b'+'), Just(b'-'), Just(b'='), Just(b'x')]),
        )
            .prop_map(|(fold_local_case, recipient_delimiter)| NormalizeConfig {
                fold_local_case,
                recipient_delimiter,
            })
    }

    /// A local part as a population file may hold: dot-atoms with the odd special, or quoted
    /// strings with spaces and escapes.
    fn local_part() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[A-Za-z0-9.!$%&'*/=?^_`{|}~+-][A-Za-z0-9.!#$%&'*/=?^_`{|}~+-]{0,15}"
                .prop_map(String::into_bytes),
            "\"[#@][A-Za-z0-9 .]{0,6}\"".prop_map(String::into_bytes),
            "\"[A-Za-z0-9 .+@\"]{1,12}\"".prop_map(String::into_bytes),
            "\"([a-z ]|\\\\[a-z\\\\\" ]){1,8}\"".prop_map(String::into_bytes),
        ]
    }

    fn population() -> impl Strategy<Value = Population> {
        let domains = prop::collection::vec(("[A-Za-z0-9.-]{1,12}", any::<bool>()), 1..5);
        let mailboxes = prop::collection::vec(
            (
                local_part(),
                0usize..5,
                prop_oneof![
                    Just(Preference::In),
                    Just(Preference::Out),
                    Just(Preference::Default)
                ],
            ),
            0..40,
        );
        (any_config(), domains, mailboxes).prop_map(|(config, domains, mailboxes)| {
            let mut p = Population::new(config);
            let names: Vec<&String> = domains.iter().map(|(d, _)| d).collect();
            for (domain, opt_in) in &domains {
                let regime = if *opt_in {
                    Regime::OptIn
                } else {
                    Regime::OptOut
                };
                // Duplicates and unreachable entries are just skipped: the generator only
                // has to produce some valid population.
                let _ = p.add_domain(domain.as_bytes(), regime);
            }
            for (mut local, domain, preference) in mailboxes {
                local.push(b'@');
                local.extend_from_slice(names[domain % names.len()].as_bytes());
                let _ = p.add_mailbox(&local, preference);
            }
            p
        })
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(p in population()) {
            let mut text = Vec::new();
            p.write_to(&mut text).unwrap();
            let parsed = Population::parse(&text, p.normalize_config());
            let shown_text = String::from_utf8_lossy(&text).into_owned();
            prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed, shown_text);
            let parsed = parsed.unwrap();
            prop_assert_eq!(entries(&parsed), entries(&p), "{}", shown_text);
            prop_assert_eq!(parsed, p.clone());
            let mut again = Vec::new();
            p.write_to(&mut again).unwrap();
            prop_assert_eq!(again, text);
        }

        #[test]
        fn parse_never_panics_on_bytes(text in prop::collection::vec(any::<u8>(), 0..256), config in any_config()) {
            let _ = Population::parse(&text, config);
        }

        #[test]
        fn parse_never_panics_on_near_misses(
            text in "((@|#)?[a-zA-Z+\" \\\\@.\r]{0,8}\t?(in|out|default|opt-in|opt-out|x|)\t?\r?\n){0,12}",
            config in any_config(),
        ) {
            if let Ok(p) = Population::parse(text.as_bytes(), config) {
                // Whatever parses also survives a round trip.
                let mut written = Vec::new();
                p.write_to(&mut written).unwrap();
                prop_assert_eq!(Population::parse(&written, config).unwrap(), p);
            }
        }
    }
}
