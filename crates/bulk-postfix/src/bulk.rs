//! Which transactions are bulk mail. Postfix has no BULK verb, so the policy server is
//! told: every transaction ([`BulkRule::Every`]), or those from listed senders or client
//! addresses ([`BulkRule::Listed`]).
//!
//! List files hold one entry a line; `#` starts a comment, blank lines are skipped:
//!
//! - [`SenderList`]: `news@shop.example` (that sender address), `shop.example` or
//!   `@shop.example` (any sender at that domain), `.shop.example` (any sender at a
//!   subdomain of it, as in Postfix's access maps). Compared case-insensitively (ASCII).
//!   The null sender (`<>`, bounces) is never bulk.
//! - [`ClientList`]: `192.0.2.7`, `2001:db8::1`, or networks `192.0.2.0/24`,
//!   `2001:db8::/32`.

use std::collections::HashSet;
use std::net::IpAddr;

/// A list file's line that is not an entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {entry:?}: {reason}")]
pub struct ListError {
    /// Its line number, from 1.
    pub line: usize,
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The entries of a list file: each line without its comment, trimmed, with its number.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let entry = line.split('#').next().unwrap_or_default().trim();
        (!entry.is_empty()).then_some((i + 1, entry))
    })
}

/// Senders whose transactions are bulk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderList {
    /// Whole addresses, lowercase.
    addresses: HashSet<String>,
    /// Domains, lowercase.
    domains: HashSet<String>,
    /// Parents whose subdomains are listed (`.shop.example` is kept as `shop.example`).
    parents: HashSet<String>,
}

impl SenderList {
    /// Parses a list file's text (format in the [module docs](self)).
    pub fn parse(text: &str) -> Result<SenderList, ListError> {
        let mut list = SenderList::default();
        for (line, entry) in entries(text) {
            let error = |reason| ListError {
                line,
                entry: entry.to_owned(),
                reason,
            };
            if entry.contains(char::is_whitespace) {
                return Err(error("an entry holds no space"));
            }
            let lower = entry.to_ascii_lowercase();
            if let Some(parent) = lower.strip_prefix('.') {
                check_domain(parent).map_err(error)?;
                list.parents.insert(parent.to_owned());
            } else if let Some(domain) = lower.strip_prefix('@') {
                check_domain(domain).map_err(error)?;
                list.domains.insert(domain.to_owned());
            } else if let Some((local, domain)) = lower.rsplit_once('@') {
                if local.is_empty() {
                    return Err(error("an address needs a local part"));
                }
                check_domain(domain).map_err(error)?;
                list.addresses.insert(lower);
            } else {
                check_domain(&lower).map_err(error)?;
                list.domains.insert(lower);
            }
        }
        Ok(list)
    }

    /// Whether `sender` (as Postfix's `sender` attribute gives it; empty for `<>`) is
    /// listed, by address, domain or parent domain.
    pub fn contains(&self, sender: &str) -> bool {
        if sender.is_empty() {
            return false;
        }
        let sender = sender.to_ascii_lowercase();
        if self.addresses.contains(&sender) {
            return true;
        }
        let Some((_, domain)) = sender.rsplit_once('@') else {
            return false;
        };
        if self.domains.contains(domain) {
            return true;
        }
        // Each parent of the domain: `a.b.shop.example` tries `b.shop.example`, then
        // `shop.example`, then `example`.
        domain
            .match_indices('.')
            .any(|(dot, _)| self.parents.contains(&domain[dot + 1..]))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.addresses.len() + self.domains.len() + self.parents.len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
    };
    if domain.is_empty() || domain.len() > 255 || !domain.split('.').all(label_ok) {
        return Err("not a domain name");
    }
    Ok(())
}

/// One network: an address and the length of its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    /// IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one comparison serves.
    bits: u128,
    /// Prefix length in the 128 bits (an IPv4 `/24` is 96 + 24).
    prefix: u32,
}

impl Network {
    fn contains(&self, address: u128) -> bool {
        let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
        (address ^ self.bits) & mask == 0
    }
}

fn as_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Client addresses whose transactions are bulk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientList {
    networks: Vec<Network>,
}

impl ClientList {
    /// Parses a list file's text (format in the [module docs](self)).
    pub fn parse(text: &str) -> Result<ClientList, ListError> {
        let mut list = ClientList::default();
        for (line, entry) in entries(text) {
            let error = |reason| ListError {
                line,
                entry: entry.to_owned(),
                reason,
            };
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| error("not an IPv4 or IPv6 address"))?;
            let width = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => width,
                Some(text) => text
                    .parse::<u32>()
                    .ok()
                    .filter(|&p| p <= width && !text.starts_with('+'))
                    .ok_or_else(|| {
                        error("the prefix length is not a number within the address's width")
                    })?,
            };
            let network = Network {
                bits: as_bits(address),
                prefix: prefix + (128 - width),
            };
            if network.bits
                != network.bits & u128::MAX.checked_shl(128 - network.prefix).unwrap_or(0)
            {
                return Err(error("host bits are set beyond the prefix"));
            }
            list.networks.push(network);
        }
        Ok(list)
    }

    /// Whether `client` (Postfix's `client_address` attribute) is in a listed network.
    /// Anything that is not an IP address (`unknown`) is not.
    pub fn contains(&self, client: &str) -> bool {
        let Ok(address) = client.parse::<IpAddr>() else {
            return false;
        };
        // An IPv4-mapped IPv6 client matches IPv4 entries, as it is the same host.
        let bits = as_bits(address);
        self.networks.iter().any(|network| network.contains(bits))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

/// Which transactions count as bulk mail: preferences then apply to their recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkRule {
    /// Every transaction: preferences apply to all mail.
    Every,
    /// Transactions from a listed sender, or from a listed client address.
    Listed {
        /// Listed senders.
        senders: SenderList,
        /// Listed client addresses and networks.
        clients: ClientList,
    },
}

impl BulkRule {
    /// Whether a transaction with this `sender` (empty for `<>`) from `client` is bulk.
    pub fn is_bulk(&self, sender: &str, client: &str) -> bool {
        match self {
            BulkRule::Every => true,
            BulkRule::Listed { senders, clients } => {
                senders.contains(sender) || clients.contains(client)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_by_address_domain_and_parent() {
        let list = SenderList::parse(
            "# bulk senders\nnews@Shop.example\n\n@mailer.test  # a whole domain\n\
             lists.test\n.esp.test\n",
        )
        .unwrap();
        assert_eq!(list.len(), 4);
        for (sender, bulk) in [
            ("news@shop.example", true),
            ("NEWS@SHOP.EXAMPLE", true),
            ("other@shop.example", false),
            ("news+x@shop.example", false),
            ("anyone@mailer.test", true),
            ("anyone@sub.mailer.test", false),
            ("x@lists.test", true),
            ("x@esp.test", false),
            ("bounce+ann=example.org@a.b.esp.test", true),
            ("x@notesp.test", false),
            ("", false),
            ("postmaster", false),
        ] {
            assert_eq!(list.contains(sender), bulk, "{sender}");
        }
    }

    #[test]
    fn clients_by_address_and_network() {
        let list = ClientList::parse(
            "192.0.2.7\n198.51.100.0/24 # an ESP\n2001:db8::/32\n::1\n0.0.0.0/0\n",
        )
        .unwrap();
        let only_v6 = ClientList::parse("2001:db8::/32\n").unwrap();
        for (client, bulk) in [
            ("192.0.2.7", true),
            ("192.0.2.8", true), // 0.0.0.0/0 is every IPv4 address
            ("198.51.100.255", true),
            ("2001:db8:1::5", true),
            ("2001:db9::5", false),
            ("::1", true),
            ("::2", false),
            ("::ffff:192.0.2.7", true),
            ("unknown", false),
            ("", false),
        ] {
            assert_eq!(list.contains(client), bulk, "{client}");
        }
        assert!(!only_v6.contains("192.0.2.7"));
        let strict = ClientList::parse("198.51.100.0/24\n").unwrap();
        assert!(strict.contains("198.51.100.9"));
        assert!(!strict.contains("198.51.101.9"));
        assert!(!strict.contains("2001:db8::1"));
    }

    #[test]
    fn bad_entries_name_their_line() {
        for (text, line, reason) in [
            ("ok.test\nnews@\n", 2, "not a domain"),
            ("@\n", 1, "not a domain"),
            ("a b@c.test\n", 1, "no space"),
            ("@x..test\n", 1, "not a domain"),
            ("@x.test\n\n.\n", 3, "not a domain"),
            ("@x.test\n@y.test\n@z.test\n@x@y.test\n", 4, "not a domain"),
        ] {
            let error = SenderList::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.to_string().contains(reason), "{text:?}: {error}");
        }
        for (text, line, reason) in [
            ("192.0.2.1\n192.0.2.300\n", 2, "not an IPv4"),
            ("192.0.2.0/33\n", 1, "prefix length"),
            ("192.0.2.0/+8\n", 1, "prefix length"),
            ("2001:db8::/129\n", 1, "prefix length"),
            ("192.0.2.1/24\n", 1, "host bits"),
            ("example.org\n", 1, "not an IPv4"),
        ] {
            let error = ClientList::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.to_string().contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_rule_takes_either_list() {
        let rule = BulkRule::Listed {
            senders: SenderList::parse("shop.example\n").unwrap(),
            clients: ClientList::parse("192.0.2.0/24\n").unwrap(),
        };
        assert!(rule.is_bulk("news@shop.example", "203.0.113.1"));
        assert!(rule.is_bulk("friend@home.test", "192.0.2.9"));
        assert!(!rule.is_bulk("friend@home.test", "203.0.113.1"));
        assert!(!rule.is_bulk("", "203.0.113.1"));
        assert!(BulkRule::Every.is_bulk("", "unknown"));
    }
}
