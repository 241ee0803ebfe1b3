//! The store's key names, value bytes and meta fields (the crate docs give the layout as a
//! table), and the Redis Cluster slot of a domain's keys.

use bulk_policy::NormalizeConfig;

/// The format tag written under `PREFIX:meta` (field `format`); [`RedisBackend::connect`]
/// refuses any other.
///
/// [`RedisBackend::connect`]: crate::RedisBackend::connect
pub const FORMAT: &str = "bulkbench-policy-redis/1";

/// The field of a domain's hash that holds its regime: no local part is empty, so it
/// cannot collide with a mailbox's field.
pub(crate) const REGIME_FIELD: &[u8] = b"";

/// Meta hash fields.
pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_FOLD: &str = "fold_local_case";
pub(crate) const META_DELIMITER: &str = "recipient_delimiter";

/// Number of Redis Cluster hash slots.
pub(crate) const SLOTS: u16 = 16_384;

/// `PREFIX:meta`, the store's meta hash.
pub(crate) fn meta_key(prefix: &str) -> String {
    format!("{prefix}:meta")
}

/// `PREFIX:domains`, the set of every domain a load or `set_regime` may have written.
pub(crate) fn domains_key(prefix: &str) -> String {
    format!("{prefix}:domains")
}

/// `PREFIX:{DOMAIN}`: the hash of a domain, its regime and its mailboxes. `{`, `}` and `%`
/// in the domain are percent-escaped, so the braces hold exactly the domain: Redis Cluster
/// hashes the text between them (the hash tag), and the staging key shares it.
pub(crate) fn domain_key(prefix: &str, domain: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + domain.len() + 3);
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(b":{");
    escape_into(domain, &mut key);
    key.push(b'}');
    key
}

/// `PREFIX:{DOMAIN}:next`: where a load writes a domain's new hash before renaming it
/// over the live one (same hash tag, so same slot).
pub(crate) fn staging_key(prefix: &str, domain: &[u8]) -> Vec<u8> {
    let mut key = domain_key(prefix, domain);
    key.extend_from_slice(b":next");
    key
}

fn escape_into(domain: &[u8], out: &mut Vec<u8>) {
    for &b in domain {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'{' => out.extend_from_slice(b"%7B"),
            b'}' => out.extend_from_slice(b"%7D"),
            _ => out.push(b),
        }
    }
}

/// The Redis Cluster slot of a domain's keys: CRC16 (XMODEM) of the escaped domain, the
/// hash tag of [`domain_key`], modulo 16,384.
pub(crate) fn domain_slot(domain: &[u8]) -> u16 {
    let mut crc = Crc16::default();
    for &b in domain {
        match b {
            b'%' => crc.update(b"%25"),
            b'{' => crc.update(b"%7B"),
            b'}' => crc.update(b"%7D"),
            _ => crc.update(&[b]),
        }
    }
    crc.0 % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), the hash of Redis Cluster slots.
#[derive(Default)]
struct Crc16(u16);

impl Crc16 {
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u16::from(b) << 8;
            for _ in 0..8 {
                self.0 = if self.0 & 0x8000 != 0 {
                    (self.0 << 1) ^ 0x1021
                } else {
                    self.0 << 1
                };
            }
        }
    }
}

/// The meta fields of a store normalized with `normalize`, format first.
pub(crate) fn meta_fields(normalize: NormalizeConfig) -> [(&'static str, Vec<u8>); 3] {
    [
        (META_FORMAT, FORMAT.as_bytes().to_vec()),
        (
            META_FOLD,
            if normalize.fold_local_case {
                b"1"
            } else {
                b"0"
            }
            .to_vec(),
        ),
        (
            META_DELIMITER,
            normalize
                .recipient_delimiter
                .map(|d| vec![d])
                .unwrap_or_default(),
        ),
    ]
}

/// The normalization of a store from its meta fields' values (fold, delimiter).
pub(crate) fn normalize_of(fold: &[u8], delimiter: &[u8]) -> Option<NormalizeConfig> {
    let fold_local_case = match fold {
        b"1" => true,
        b"0" => false,
        _ => return None,
    };
    let recipient_delimiter = match delimiter {
        [] => None,
        [d] => Some(*d),
        _ => return None,
    };
    Some(NormalizeConfig {
        fold_local_case,
        recipient_delimiter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn slots_agree_with_the_redis_client() {
        for domain in [
            &b"example.org"[..],
            b"a",
            b"x{y}z",
            b"}start",
            b"100%.net",
            b"{}",
        ] {
            let key = domain_key("bulkbench", domain);
            let ours = domain_slot(domain);
            assert_eq!(Slot::new(ours), Some(Slot::for_key(&key)), "{domain:?}");
            assert_eq!(
                Slot::for_key(staging_key("p", domain)),
                Slot::for_key(&key),
                "{domain:?}"
            );
        }
        // Redis' own example (CLUSTER KEYSLOT foo).
        let mut crc = Crc16::default();
        crc.update(b"foo");
        assert_eq!(crc.0 % SLOTS, 12_182);
    }

    #[test]
    fn braces_in_domains_are_escaped() {
        assert_eq!(domain_key("p", b"a{b}%"), b"p:{a%7Bb%7D%25}");
        assert_eq!(staging_key("p", b"x.org"), b"p:{x.org}:next");
    }

    #[test]
    fn meta_round_trips() {
        for config in [
            NormalizeConfig::default(),
            NormalizeConfig {
                fold_local_case: false,
                recipient_delimiter: None,
            },
        ] {
            let [_, (_, fold), (_, delimiter)] = meta_fields(config);
            assert_eq!(normalize_of(&fold, &delimiter), Some(config));
        }
        assert_eq!(normalize_of(b"yes", b""), None);
        assert_eq!(normalize_of(b"1", b"++"), None);
    }
}
