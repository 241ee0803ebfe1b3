//! The addresses of one batched lookup, stored in one arena.

/// The RCPT addresses of one pipelined read, in order, packed into one byte arena.
///
/// A connection keeps one batch and [`clear`](Self::clear)s it between reads, so once it has
/// grown to the largest read seen, filling it allocates nothing: no `Vec` per address.
///
/// Addresses are raw mailboxes as they appeared in a RCPT path, brackets and source route
/// already removed (`local@domain`, where local may be a quoted string like
/// `"ann smith"@x.org`); backends normalize them.
#[derive(Clone, Debug, Default)]
pub struct AddressBatch {
    /// Every address, back to back.
    bytes: Vec<u8>,
    /// `ends[i]` is the end offset of address `i` in `bytes`; address `i` starts at
    /// `ends[i - 1]` (or 0). Invariant: non-decreasing and never past `bytes.len()`.
    /// `u32` halves the index memory; see [`push`](Self::push) for the 4 GiB limit.
    ends: Vec<u32>,
    /// `normal[i]`: address `i` was pushed by [`push_normal`](Self::push_normal). Always as
    /// long as `ends`.
    normal: Vec<bool>,
}

impl AddressBatch {
    /// An empty batch.
    pub fn new() -> Self {
        AddressBatch::default()
    }

    /// An empty batch with room for `addresses` addresses totalling `bytes` octets.
    pub fn with_capacity(addresses: usize, bytes: usize) -> Self {
        AddressBatch {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(addresses),
            normal: Vec::with_capacity(addresses),
        }
    }

    /// Reserves room for `addresses` more entries of `bytes` more octets in all.
    pub fn reserve(&mut self, addresses: usize, bytes: usize) {
        self.bytes.reserve(bytes);
        self.ends.reserve(addresses);
        self.normal.reserve(addresses);
    }

    /// Appends `address` as the batch's last entry.
    ///
    /// An address that would take the arena past `u32::MAX` octets (4 GiB) is stored as
    /// empty instead, which every backend resolves as [`Verdict::NotLocal`]: the batch still
    /// holds one entry per push, so verdicts stay aligned with the RCPTs they answer. The
    /// protocol layer's line and batch limits keep real batches far below this.
    ///
    /// [`Verdict::NotLocal`]: crate::Verdict::NotLocal
    pub fn push(&mut self, address: &[u8]) {
        self.push_marked(address, false);
    }

    /// Appends `address`, which its producer checked to hold no ASCII upper-case letter and
    /// no `+`: the usual normalization (case folded, `+` the recipient delimiter) leaves such
    /// an address as it is, so a backend normalizing that way may copy it as its own key
    /// without the folding pass. Nothing checks the promise: an address that breaks it may
    /// get a key no store holds. The parser's plainest RCPT paths are checked as they are
    /// parsed. Otherwise as [`push`](Self::push).
    pub fn push_normal(&mut self, address: &[u8]) {
        self.push_marked(address, true);
    }

    fn push_marked(&mut self, address: &[u8], normal: bool) {
        self.normal.push(normal);
        let end = match u32::try_from(self.bytes.len() + address.len()) {
            Ok(end) => {
                self.bytes.extend_from_slice(address);
                end
            }
            // The arena is below u32::MAX already (every stored end fits), so this fits too.
            Err(_) => u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
        };
        self.ends.push(end);
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no address.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Address `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = match i.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)? as usize,
            None => 0,
        };
        self.bytes.get(start..end)
    }

    /// The addresses in push order, each with whether it was pushed by
    /// [`push_normal`](Self::push_normal).
    pub fn iter_marked(&self) -> impl ExactSizeIterator<Item = (&[u8], bool)> + '_ {
        self.iter().zip(self.normal.iter().copied())
    }

    /// The addresses in push order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let end = end as usize;
            // The invariant on `ends` makes this range valid; `get` keeps a broken
            // invariant from ever turning into a panic.
            let address = self.bytes.get(start..end).unwrap_or_default();
            start = end;
            address
        })
    }

    /// Removes every address, keeping the allocations for the next read.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.normal.clear();
    }
}

impl<'a> FromIterator<&'a [u8]> for AddressBatch {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(iter: I) -> Self {
        let mut batch = AddressBatch::new();
        batch.extend(iter);
        batch
    }
}

impl<'a> Extend<&'a [u8]> for AddressBatch {
    fn extend<I: IntoIterator<Item = &'a [u8]>>(&mut self, iter: I) {
        for address in iter {
            self.push(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[&[&[u8]]] = &[
            &[],
            &[b""],
            &[b"ann@x.org"],
            &[b"ann@x.org", b"", b"\"bob smith\"@y.net", b"c@z"],
        ];
        for addresses in cases {
            let batch: AddressBatch = addresses.iter().copied().collect();
            assert_eq!(batch.len(), addresses.len());
            assert_eq!(batch.is_empty(), addresses.is_empty());
            assert_eq!(batch.iter().len(), addresses.len());
            assert_eq!(batch.iter().collect::<Vec<_>>(), *addresses);
            for (i, address) in addresses.iter().enumerate() {
                assert_eq!(batch.get(i), Some(*address));
            }
            assert_eq!(batch.get(addresses.len()), None);
            assert!(batch.iter_marked().all(|(_, normal)| !normal));
        }
    }

    #[test]
    fn normal_addresses_are_marked_in_place() {
        let mut batch = AddressBatch::new();
        batch.push(b"Ann@x.org");
        batch.push_normal(b"bob@x.org");
        batch.push(b"c+d@x.org");
        batch.push_normal(b"e@y.net");
        let marked: Vec<(&[u8], bool)> = batch.iter_marked().collect();
        assert_eq!(
            marked,
            [
                (&b"Ann@x.org"[..], false),
                (b"bob@x.org", true),
                (b"c+d@x.org", false),
                (b"e@y.net", true),
            ]
        );
        assert_eq!(batch.iter_marked().len(), 4);
        batch.clear();
        assert_eq!(batch.iter_marked().len(), 0);
        batch.push(b"f@x.org");
        assert_eq!(
            batch.iter_marked().collect::<Vec<_>>(),
            [(&b"f@x.org"[..], false)]
        );
    }

    #[test]
    fn clear_keeps_capacity() {
        let mut batch = AddressBatch::with_capacity(4, 64);
        batch.push(b"ann@x.org");
        batch.push(b"bob@x.org");
        let (bytes, ends) = (batch.bytes.capacity(), batch.ends.capacity());
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.get(0), None);
        assert_eq!(
            (batch.bytes.capacity(), batch.ends.capacity()),
            (bytes, ends)
        );
        batch.push(b"c@z");
        assert_eq!(batch.iter().collect::<Vec<_>>(), [b"c@z"]);
    }
}
