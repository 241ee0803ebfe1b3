//! What the table file holds: key kinds, value encodings and the header keys (the format is
//! described for readers in the crate docs, "File format").
//!
//! Changing anything here changes the file format: bump [`FORMAT_VERSION`], so that `open`
//! refuses old files with a "rebuild it" error instead of misreading them.

use bulk_policy::{NormalizeConfig, Regime, Verdict};

/// Version of the table format this build writes and reads. A file of another version is
/// refused by [`FstBackend::open`](crate::FstBackend::open) with [`FstError::Version`].
///
/// [`FstError::Version`]: crate::FstError::Version
pub const FORMAT_VERSION: u32 = 2;

/// Header key whose presence marks a bulkbench table; its value packs [`FORMAT_VERSION`] and
/// the [`NormalizeConfig`] the keys were built with. Header keys start with NUL, which
/// neither a domain key nor a mailbox key does.
pub(crate) const MAGIC_KEY: &[u8] = b"\0bulkbench-fst";
/// Header key: number of domain keys.
pub(crate) const DOMAINS_KEY: &[u8] = b"\0domains";
/// Header key: number of mailbox keys.
pub(crate) const MAILBOXES_KEY: &[u8] = b"\0mailboxes";
/// First byte of a domain key: `\x01domain`.
pub(crate) const DOMAIN_TAG: u8 = 1;
/// First byte of a mailbox key: `\x02domain\0local`.
pub(crate) const MAILBOX_TAG: u8 = 2;

// Header keys, then domain keys, then mailbox keys: each kind is one key range.
const _: () = assert!(0 < DOMAIN_TAG && DOMAIN_TAG < MAILBOX_TAG);

/// The key of a served domain (lowercased, as the population holds it).
pub(crate) fn domain_key(domain: &[u8]) -> Vec<u8> {
    [&[DOMAIN_TAG][..], domain].concat()
}

/// Replaces `key` with the start every mailbox key of `domain` shares: `\x02domain\0`.
///
/// NUL ends the domain because neither a domain nor a local part can hold it, and because
/// it sorts below every byte a domain can hold: mailbox keys in (domain, local part) order
/// are then in byte order, as the fst builder needs (with '@' they would not be: `a.org@x`
/// sorts after `a.org.uk@x`).
pub(crate) fn mailbox_prefix_into(domain: &[u8], key: &mut Vec<u8>) {
    key.clear();
    key.push(MAILBOX_TAG);
    key.extend_from_slice(domain);
    key.push(0);
}

/// Number of header keys; a file's key count must be mailboxes + domains + this.
pub(crate) const HEADER_KEYS: u64 = 3;

/// Value of a mailbox key: its final verdict. Accept is 0 because an fst stores a zero
/// output for free, and accepting mailboxes are the common case in opt-out domains.
pub(crate) const ACCEPT: u64 = 0;
/// Value of a mailbox key whose verdict is OptedOut.
pub(crate) const OPTED_OUT: u64 = 1;

/// Value of a domain key: its regime (informational; lookups only test the key's presence).
pub(crate) fn regime_value(regime: Regime) -> u64 {
    match regime {
        Regime::OptIn => 0,
        Regime::OptOut => 1,
    }
}

/// Value of a mailbox key. Only Accept and OptedOut are ever stored.
pub(crate) fn verdict_value(verdict: Verdict) -> Option<u64> {
    match verdict {
        Verdict::Accept => Some(ACCEPT),
        Verdict::OptedOut => Some(OPTED_OUT),
        Verdict::UnknownMailbox | Verdict::NotLocal => None,
    }
}

/// Bits 0-7 of the header's low word: the recipient delimiter byte.
const DELIMITER_BITS: u64 = 0xff;
/// Bit 8: a recipient delimiter is set.
const HAS_DELIMITER: u64 = 1 << 8;
/// Bit 9: local parts are case-folded.
const FOLD_LOCAL_CASE: u64 = 1 << 9;
/// Every bit of the low word a valid header may set.
const CONFIG_BITS: u64 = DELIMITER_BITS | HAS_DELIMITER | FOLD_LOCAL_CASE;

/// The value of [`MAGIC_KEY`]: format version in the high 32 bits, config in the low ones.
pub(crate) fn pack_header(config: NormalizeConfig) -> u64 {
    let mut value = u64::from(FORMAT_VERSION) << 32;
    if let Some(delimiter) = config.recipient_delimiter {
        value |= HAS_DELIMITER | u64::from(delimiter);
    }
    if config.fold_local_case {
        value |= FOLD_LOCAL_CASE;
    }
    value
}

/// The format version of a header value.
pub(crate) fn header_version(value: u64) -> u32 {
    // The shift leaves 32 bits, so the conversion cannot fail.
    u32::try_from(value >> 32).unwrap_or(u32::MAX)
}

/// The config of a header value of the current version, or `None` if it sets bits this
/// version does not define (a delimiter byte without the delimiter flag included).
pub(crate) fn header_config(value: u64) -> Option<NormalizeConfig> {
    let low = value & 0xffff_ffff;
    if low & !CONFIG_BITS != 0 || (low & HAS_DELIMITER == 0 && low & DELIMITER_BITS != 0) {
        return None;
    }
    // Masked to 8 bits, so the conversion cannot fail.
    let delimiter = u8::try_from(low & DELIMITER_BITS).unwrap_or(0);
    Some(NormalizeConfig {
        fold_local_case: low & FOLD_LOCAL_CASE != 0,
        recipient_delimiter: (low & HAS_DELIMITER != 0).then_some(delimiter),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_every_config() {
        let delimiters = (0..=u8::MAX).map(Some).chain([None]);
        for delimiter in delimiters {
            for fold_local_case in [false, true] {
                let config = NormalizeConfig {
                    fold_local_case,
                    recipient_delimiter: delimiter,
                };
                let value = pack_header(config);
                assert_eq!(header_version(value), FORMAT_VERSION);
                assert_eq!(header_config(value), Some(config), "{config:?}");
            }
        }
    }

    #[test]
    fn header_with_undefined_bits_is_refused() {
        let version = u64::from(FORMAT_VERSION) << 32;
        for low in [1 << 10, 1 << 31, u64::from(b'+')] {
            assert_eq!(header_config(version | low), None, "{low:#x}");
        }
        assert_eq!(header_version(7 << 32), 7);
    }

    #[test]
    fn key_kinds_sort_apart() {
        // Header keys, then domain keys, then mailbox keys: each kind is one key range.
        for key in [MAGIC_KEY, DOMAINS_KEY, MAILBOXES_KEY] {
            assert_eq!(key.first(), Some(&0));
        }
        assert_eq!(domain_key(b"x.org"), b"\x01x.org");
        let mut key = b"stale".to_vec();
        mailbox_prefix_into(b"x.org", &mut key);
        assert_eq!(key, b"\x02x.org\0");
    }
}
