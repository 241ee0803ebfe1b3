//! Lookup keys: how a RCPT mailbox becomes the key a backend stores.
//!
//! Normalization runs once per RCPT, so [`NormalizeConfig::normalize_into`] writes into a
//! caller's buffer and allocates nothing once that buffer has grown to an address's size.

/// Longest mailbox accepted in a population: RFC 5321 4.5.3.1.3 caps a path at 256 octets
/// including the angle brackets, which leaves 254 for `local@domain`.
pub const MAX_ADDRESS_LEN: usize = 254;

/// How addresses are turned into lookup keys, as Postfix's `recipient_delimiter` and case
/// handling do.
///
/// The same config must be used to build a backend and to look addresses up in it: a key
/// stored with folding on is never found by a lookup with folding off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalizeConfig {
    /// ASCII-lowercase the local part. RFC 5321 2.4 says local parts may be case-sensitive,
    /// but practically every mail system folds them, so this is on by default.
    pub fold_local_case: bool,
    /// Cut the local part at the first occurrence of this byte (after its first octet):
    /// `ann+news` is looked up as `ann`. `None` disables subaddressing.
    pub recipient_delimiter: Option<u8>,
}

impl Default for NormalizeConfig {
    /// Folding on, delimiter `+`: the common mail server setup.
    fn default() -> Self {
        NormalizeConfig {
            fold_local_case: true,
            recipient_delimiter: Some(b'+'),
        }
    }
}

/// Why an address has no lookup key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@` separates local part and domain.
    #[error("address has no '@'")]
    MissingAt,
    /// Nothing before the `@`, or an empty quoted string (`""@x.org`).
    #[error("address has an empty local part")]
    EmptyLocalPart,
    /// Nothing after the last `@`.
    #[error("address has an empty domain")]
    EmptyDomain,
    /// A quoted local part whose last backslash escapes the closing quote (`"ann\"@x.org`):
    /// the quoted string is not terminated.
    #[error("quoted local part ends in a backslash that escapes its closing quote")]
    DanglingEscape,
    /// After unquoting and cutting, the local part itself starts and ends with `"`
    /// (`"\"ann\""@x.org`). Its key would read as a different, quoted, local part, so
    /// normalizing the key again would change it; refusing keeps keys a fixed point.
    #[error("local part is still enclosed in quotes after unquoting")]
    AmbiguousQuotes,
}

/// What normalization did besides writing the key; the population parser needs `cut`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Normalized {
    /// Index of the separating `@` in the key.
    pub(crate) at: usize,
    /// The recipient delimiter cut the local part.
    pub(crate) cut: bool,
}

impl NormalizeConfig {
    /// The lookup key of one address, in a buffer of its own, and the index of its `@`:
    /// for the update APIs of the stores (`get`, `set`), which handle one address at a
    /// time. Lookups reuse a buffer through [`normalize_into`](Self::normalize_into).
    pub fn key_of(&self, address: &str) -> Result<(Vec<u8>, usize), AddressError> {
        let mut key = Vec::new();
        let at = self.normalize_into(address.as_bytes(), &mut key)?;
        Ok((key, at))
    }

    /// Writes the lookup key of `address` into `out` (cleared first) and returns the index of
    /// the '@' in `out`.
    ///
    /// `address` is a mailbox as it appeared in a RCPT path, brackets and source route
    /// removed. Rules, in order:
    ///
    /// 1. split at the *last* `@` (a quoted local part may contain `@`);
    /// 2. a local part that starts and ends with `"` (length >= 2) is unquoted: the quotes
    ///    are dropped and `\x` becomes `x` (RFC 5321 4.1.2 quoted-pairSMTP);
    /// 3. if `fold_local_case`, the local part is ASCII-lowercased;
    /// 4. if a delimiter is set and occurs at an index > 0 of the local part, the local part
    ///    is cut at that first occurrence (`+x` stays `+x`, as in Postfix). With folding on,
    ///    a letter delimiter matches either case;
    /// 5. the domain is ASCII-lowercased.
    ///
    /// The key is a fixed point: normalizing it again returns it unchanged. Bytes are not
    /// otherwise validated (the protocol layer does that); an odd byte simply yields a key
    /// that no population contains. On error, the content of `out` is unspecified.
    ///
    /// ```
    /// use bulk_policy::NormalizeConfig;
    ///
    /// let mut key = Vec::new();
    /// let at = NormalizeConfig::default().normalize_into(b"Ann+News@X.Org", &mut key)?;
    /// assert_eq!((key.as_slice(), at), (&b"ann@x.org"[..], 3));
    /// # Ok::<(), bulk_policy::AddressError>(())
    /// ```
    pub fn normalize_into(&self, address: &[u8], out: &mut Vec<u8>) -> Result<usize, AddressError> {
        out.clear();
        self.normalize_parts(address, out).map(|n| n.at)
    }

    /// Like [`normalize_into`](Self::normalize_into), but appends the key to `out` instead
    /// of replacing its content, and returns the index of the '@' within the appended key.
    /// On error, `out` is left as it was.
    pub fn normalize_append(
        &self,
        address: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, AddressError> {
        let len = out.len();
        match self.normalize_parts(address, out) {
            Ok(n) => Ok(n.at),
            Err(e) => {
                out.truncate(len);
                Err(e)
            }
        }
    }

    /// Whether these rules leave an address with no upper-case letter and no `+` (as
    /// [`AddressBatch::push_normal`](crate::AddressBatch::push_normal) vouches) as it is,
    /// given [`own_key`](Self::own_key)'s checks of the address: the delimiter is `+` or none.
    pub(crate) fn keeps_normal(&self) -> bool {
        matches!(self.recipient_delimiter, None | Some(b'+'))
    }

    /// For an address known to hold no upper-case letter and no `+`, under rules that
    /// [`keep`](Self::keeps_normal) such addresses: the index of its '@' if the local part
    /// is not quoted and both parts are there, so that it is its own key. `None`: normalize
    /// it.
    #[inline]
    pub(crate) fn own_key(address: &[u8]) -> Option<usize> {
        if address.first() == Some(&b'"') {
            return None;
        }
        last_at(address).filter(|&at| at > 0 && at + 1 < address.len())
    }

    /// [`normalize_into`](Self::normalize_into), also reporting whether the delimiter cut
    /// the local part.
    /// Appends the key of `address` to `out` and reports the index of its '@' (relative to
    /// the key's start) and whether the delimiter cut the local part. On error, `out` may
    /// hold part of a key: callers clear or truncate it.
    pub(crate) fn normalize_parts(
        &self,
        address: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Normalized, AddressError> {
        let at = last_at(address).ok_or(AddressError::MissingAt)?;
        let (local, domain) = (&address[..at], &address[at + 1..]);
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if domain.is_empty() {
            return Err(AddressError::EmptyDomain);
        }

        // The common case: the local part folded like the domain and not quoted.
        if self.fold_local_case && local[0] != b'"' {
            return Ok(self.normalize_plain(address, at, out));
        }
        self.normalize_split(local, domain, out)
    }

    /// The key of an address whose local part is folded like its domain and is not quoted
    /// (`at` is its last '@', with octets on both sides): one copy and one folding pass
    /// over the whole address, then the delimiter's cut. Rules 3 to 5 give the same key in
    /// this order: folding is per octet, the delimiter is searched folded in the folded
    /// local part, and cutting drops the octets from it up to the '@'. A key that does not
    /// start with a quote cannot end up enclosed in quotes.
    #[inline]
    fn normalize_plain(&self, address: &[u8], at: usize, out: &mut Vec<u8>) -> Normalized {
        let base = out.len();
        out.extend_from_slice(address);
        let delimiter = self.recipient_delimiter.map(|d| d.to_ascii_lowercase());
        // Whether the delimiter occurs anywhere, learnt in the folding pass: most addresses
        // carry no tag, and skip the search of the local part.
        let tagged = fold_ascii(&mut out[base..], delimiter.unwrap_or(b'@'));
        let mut at = at;
        let mut cut = false;
        if let Some(d) = delimiter
            && tagged
            && let Some(i) = memchr::memchr(d, &out[base + 1..base + at])
        {
            // The local part ends at 1 + i: the domain, with its '@', moves up to there.
            out.copy_within(base + at.., base + 1 + i);
            out.truncate(out.len() - (at - 1 - i));
            at = 1 + i;
            cut = true;
        }
        Normalized { at, cut }
    }

    /// The key of `local` '@' `domain` by every rule in turn: quoted local parts, and local
    /// parts not folded.
    fn normalize_split(
        &self,
        local: &[u8],
        domain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Normalized, AddressError> {
        let base = out.len();
        // The key is never longer than the address, so this is the only growth and it is a
        // no-op once the buffer has served an address this long.
        out.reserve(local.len() + 1 + domain.len());

        match local {
            [b'"', inner @ .., b'"'] => unquote(inner, out)?,
            _ => out.extend_from_slice(local),
        }
        if out.len() == base {
            return Err(AddressError::EmptyLocalPart);
        }

        // Folding before cutting (and folding the delimiter alike) keeps the key a fixed
        // point when the delimiter is a letter: cutting first would leave `aXb` whole under
        // delimiter `x`, and its folded key `axb` would then be cut on a second pass.
        let mut delimiter = self.recipient_delimiter;
        if self.fold_local_case {
            out[base..].make_ascii_lowercase();
            delimiter = delimiter.map(|d| d.to_ascii_lowercase());
        }
        let mut cut = false;
        if let Some(d) = delimiter
            && let Some(i) = out.get(base + 1..).and_then(|rest| memchr::memchr(d, rest))
        {
            out.truncate(base + 1 + i);
            cut = true;
        }
        if let [b'"', .., b'"'] = &out[base..] {
            return Err(AddressError::AmbiguousQuotes);
        }

        let at = out.len() - base;
        out.push(b'@');
        let domain_start = out.len();
        out.extend_from_slice(domain);
        out[domain_start..].make_ascii_lowercase();
        Ok(Normalized { at, cut })
    }
}

/// The index of the last `@` of `address`, as `memchr::memrchr` finds it, eight octets a step
/// from the end: a domain is a word or two long, where `memrchr`'s call and dispatch cost
/// as much as the search.
#[inline]
fn last_at(address: &[u8]) -> Option<usize> {
    const LOW7: u64 = u64::from_le_bytes([0x7f; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const ATS: u64 = u64::from_le_bytes([b'@'; 8]);
    let mut end = address.len();
    while let Some(word) = end.checked_sub(8).and_then(|start| address.get(start..end)) {
        let x = u64::from_le_bytes(word.try_into().ok()?) ^ ATS;
        // The high bit of each octet that is zero in `x` (an `@` in the word), exactly:
        // no carry crosses octets, as the low seven bits plus 0x7f stay below 0x100.
        let ats = !(((x & LOW7) + LOW7) | x) & HIGH;
        if ats != 0 {
            return Some(end - 8 + 7 - ats.leading_zeros() as usize / 8);
        }
        end -= 8;
    }
    address[..end].iter().rposition(|&b| b == b'@')
}

/// ASCII-lowercases `bytes` and tells whether `needle` occurs in the result, without a
/// branch per byte, so the loop vectorizes.
#[inline]
fn fold_ascii(bytes: &mut [u8], needle: u8) -> bool {
    let mut seen = false;
    for b in bytes {
        let folded = *b | (u8::from(b.wrapping_sub(b'A') < 26) << 5);
        *b = folded;
        seen |= folded == needle;
    }
    seen
}

/// Appends the content of a quoted string (quotes already removed) to `out`, resolving
/// backslash escapes. Unescaped inner quotes are kept literally: the protocol layer decides
/// what is valid syntax, normalization only has to be deterministic.
fn unquote(inner: &[u8], out: &mut Vec<u8>) -> Result<(), AddressError> {
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            match bytes.next() {
                Some(&escaped) => out.push(escaped),
                None => return Err(AddressError::DanglingEscape),
            }
        } else {
            out.push(b);
        }
    }
    Ok(())
}

/// Whether `local` would be read as a quoted local part by normalization.
pub(crate) fn is_quoted(local: &[u8]) -> bool {
    matches!(local, [b'"', .., b'"'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use memchr::memrchr;
    use proptest::prelude::*;

    const DEFAULT: NormalizeConfig = NormalizeConfig {
        fold_local_case: true,
        recipient_delimiter: Some(b'+'),
    };
    const CASE_SENSITIVE: NormalizeConfig = NormalizeConfig {
        fold_local_case: false,
        recipient_delimiter: Some(b'+'),
    };
    const NO_DELIMITER: NormalizeConfig = NormalizeConfig {
        fold_local_case: true,
        recipient_delimiter: None,
    };

    /// A key as text with its `@` index, or why there is none.
    type Key = Result<(String, usize), AddressError>;

    fn key(config: NormalizeConfig, address: &str) -> Key {
        let mut out = Vec::new();
        let at = config.normalize_into(address.as_bytes(), &mut out)?;
        Ok((String::from_utf8_lossy(&out).into_owned(), at))
    }

    #[test]
    fn default_config_matches_postfix_defaults() {
        assert_eq!(NormalizeConfig::default(), DEFAULT);
    }

    #[test]
    fn normalize_table() {
        use AddressError::*;
        let ok = |k: &str, at: usize| Ok((k.to_string(), at));
        let cases: &[(NormalizeConfig, &str, Key)] = &[
            (DEFAULT, "ann@x.org", ok("ann@x.org", 3)),
            (DEFAULT, "Ann@X.ORG", ok("ann@x.org", 3)),
            (DEFAULT, "ann+news@x.org", ok("ann@x.org", 3)),
            (DEFAULT, "ann+news+more@x.org", ok("ann@x.org", 3)),
            (DEFAULT, "ann+@x.org", ok("ann@x.org", 3)),
            (DEFAULT, "+x@x.org", ok("+x@x.org", 2)),
            (DEFAULT, "+x+y@x.org", ok("+x@x.org", 2)),
            (DEFAULT, "++@x.org", ok("+@x.org", 1)),
            (DEFAULT, "+@x.org", ok("+@x.org", 1)),
            (DEFAULT, "\"ann\"@x.org", ok("ann@x.org", 3)),
            (DEFAULT, "\"Ann Smith\"@x.org", ok("ann smith@x.org", 9)),
            (DEFAULT, "\"a\\\"b\"@x.org", ok("a\"b@x.org", 3)),
            (DEFAULT, "\"a\\\\b\"@x.org", ok("a\\b@x.org", 3)),
            (DEFAULT, "\"a@b\"@x.org", ok("a@b@x.org", 3)),
            (DEFAULT, "\"ann+x\"@x.org", ok("ann@x.org", 3)),
            (DEFAULT, "a@b@x.org", ok("a@b@x.org", 3)),
            (DEFAULT, "\"@x.org", ok("\"@x.org", 1)),
            (DEFAULT, "\"ann@x.org", ok("\"ann@x.org", 4)),
            (DEFAULT, "a\"b\"@x.org", ok("a\"b\"@x.org", 4)),
            (DEFAULT, "ann@[192.0.2.1]", ok("ann@[192.0.2.1]", 3)),
            (CASE_SENSITIVE, "Ann+News@X.ORG", ok("Ann@x.org", 3)),
            (CASE_SENSITIVE, "\"Ann\"@x.org", ok("Ann@x.org", 3)),
            (NO_DELIMITER, "Ann+News@X.ORG", ok("ann+news@x.org", 8)),
            (
                NormalizeConfig {
                    fold_local_case: false,
                    recipient_delimiter: None,
                },
                "Ann+News@X.ORG",
                ok("Ann+News@x.org", 8),
            ),
            // A letter delimiter matches both cases when folding.
            (
                NormalizeConfig {
                    fold_local_case: true,
                    recipient_delimiter: Some(b'x'),
                },
                "AnnXnews@x.org",
                ok("ann@x.org", 3),
            ),
            (
                NormalizeConfig {
                    fold_local_case: false,
                    recipient_delimiter: Some(b'-'),
                },
                "Ann-news@x.org",
                ok("Ann@x.org", 3),
            ),
            (DEFAULT, "", Err(MissingAt)),
            (DEFAULT, "ann", Err(MissingAt)),
            (DEFAULT, "@x.org", Err(EmptyLocalPart)),
            (DEFAULT, "@", Err(EmptyLocalPart)),
            (DEFAULT, "ann@", Err(EmptyDomain)),
            (DEFAULT, "x.org@", Err(EmptyDomain)),
            (DEFAULT, "\"\"@x.org", Err(EmptyLocalPart)),
            (DEFAULT, "\"ann\\\"@x.org", Err(DanglingEscape)),
            (DEFAULT, "\"\\\"\\\"\"@x.org", Err(AmbiguousQuotes)),
            (DEFAULT, "\"\\\"ann\\\"\"@x.org", Err(AmbiguousQuotes)),
            (DEFAULT, "\"a\"+x@x.org", Err(AmbiguousQuotes)),
        ];
        for (config, input, expected) in cases {
            assert_eq!(&key(*config, input), expected, "{input:?} with {config:?}");
        }
    }

    #[test]
    fn reuses_the_buffer_without_growing() {
        let mut out = Vec::with_capacity(64);
        let before = out.as_ptr();
        for address in ["Ann+x@X.org", "\"Bob Smith\"@y.net", "c@z"] {
            DEFAULT
                .normalize_into(address.as_bytes(), &mut out)
                .unwrap();
        }
        assert_eq!(
            out.as_ptr(),
            before,
            "no reallocation once capacity suffices"
        );
        assert_eq!(out, b"c@z");
    }

    fn any_config() -> impl Strategy<Value = NormalizeConfig> {
        (any::<bool>(), any::<Option<u8>>()).prop_map(|(fold_local_case, recipient_delimiter)| {
            NormalizeConfig {
                fold_local_case,
                recipient_delimiter,
            }
        })
    }

    /// Bytes biased toward what matters to normalization, so the interesting paths are hit.
    fn address_like() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                Just(b'@'),
                Just(b'+'),
                Just(b'A'),
                Just(b'x'),
                Just(b'X'),
                any::<u8>(),
            ],
            0..24,
        )
    }

    fn check_fixed_point(config: NormalizeConfig, address: &[u8]) -> Result<(), TestCaseError> {
        let mut first = Vec::new();
        if let Ok(at) = config.normalize_into(address, &mut first) {
            prop_assert_eq!(first.get(at), Some(&b'@'));
            prop_assert!(first.len() <= address.len());
            let mut second = Vec::new();
            let again = config.normalize_into(&first, &mut second);
            prop_assert_eq!(again, Ok(at));
            prop_assert_eq!(second, first);
        }
        Ok(())
    }

    /// `normalize_into` by the general rules only ([`NormalizeConfig::normalize_split`]),
    /// as before the plain path existed: the reference the plain path must agree with.
    fn general_key(
        config: NormalizeConfig,
        address: &[u8],
    ) -> Result<(Vec<u8>, usize), AddressError> {
        let at = memrchr(b'@', address).ok_or(AddressError::MissingAt)?;
        let (local, domain) = (&address[..at], &address[at + 1..]);
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if domain.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        let mut out = Vec::new();
        let normalized = config.normalize_split(local, domain, &mut out)?;
        Ok((out, normalized.at))
    }

    fn check_against_general(config: NormalizeConfig, address: &[u8]) -> Result<(), TestCaseError> {
        // Appended after other bytes, as a batch does, and into a fresh buffer.
        let mut appended = b"prefix".to_vec();
        let got = config
            .normalize_append(address, &mut appended)
            .map(|at| (appended[6..].to_vec(), at));
        prop_assert_eq!(&got, &general_key(config, address));
        let mut alone = Vec::new();
        let got = config
            .normalize_into(address, &mut alone)
            .map(|at| (alone, at));
        prop_assert_eq!(got, general_key(config, address));
        Ok(())
    }

    /// Addresses as a population or a RCPT holds them: letters of both cases, digits,
    /// dots, hyphens, tags, a few quotes and '@'s, and now and then any byte.
    fn mailbox_like() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            6 => prop::sample::select(b"abcxyzABCXYZ019.-_".to_vec()),
            2 => prop::sample::select(b"+@\"\\".to_vec()),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// `last_at` finds what `memrchr` finds.
        #[test]
        fn last_at_is_memrchr(address in prop_oneof![mailbox_like(), address_like()]) {
            prop_assert_eq!(last_at(&address), memrchr(b'@', &address));
        }

        /// The plain path (folded, unquoted local parts) gives the general rules' key.
        #[test]
        fn plain_path_agrees_with_the_general_rules(
            config in prop_oneof![Just(DEFAULT), Just(NO_DELIMITER), any_config()],
            address in prop_oneof![mailbox_like(), address_like()],
        ) {
            check_against_general(config, &address)?;
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_keys_are_fixed_points(
            config in any_config(),
            address in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            check_fixed_point(config, &address)?;
        }

        #[test]
        fn address_like_keys_are_fixed_points(config in any_config(), address in address_like()) {
            check_fixed_point(config, &address)?;
        }
    }
}
