//! The plainest RCPT paths, sixteen octets a step: the path of nearly every RCPT a bulk
//! sender writes (`ann.lee+news@mail.example.com`) checked with vector compares and a few
//! operations on bit masks, before the fast path's automaton (`command.rs`) would walk it
//! four octets a table load.
//!
//! [`plain_path`] knows a subset of what the automaton knows: local parts of letters,
//! digits, `.`, `-`, `_` and `+`, domains of letters, digits, `-` and `.`, and a path that
//! closes within [`WINDOW`] octets. Anything else, including every path it could not decide,
//! is left to the automaton, which is exact: so this module can only ever answer sooner,
//! never differently (the property test in `command.rs` and the fuzz body check it).
//!
//! Why vectors here: the automaton's steps depend on each other, one load after another,
//! while these compares are independent: on this project's machine the automaton was a
//! quarter of the RCPT path's time (BENCHMARKS.md, section 12).

/// Octets of a path looked at: four vectors. Longer paths go to the automaton.
pub(crate) const WINDOW: usize = 64;

/// A plain mailbox at the start of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plain {
    /// The mailbox's length, that is, the index of the closing `>`.
    pub(crate) close: usize,
    /// The mailbox holds no upper-case letter and no `+`: the usual normalization leaves
    /// it as it is ([`AddressBatch::push_normal`](bulk_types::AddressBatch::push_normal)).
    pub(crate) normal: bool,
}

/// The mailbox at the start of `path` (the octets after `RCPT TO:<`), if it is plain (see
/// the module docs) and closes within [`WINDOW`] octets; `None` when this check cannot
/// tell, never "invalid".
#[inline]
pub(crate) fn plain_path(path: &[u8]) -> Option<Plain> {
    Masks::of(path)?.plain()
}

/// One bit per octet of the window (bit `i` for octet `i`), by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Masks {
    /// Letters and digits.
    alnum: u64,
    dot: u64,
    hyphen: u64,
    /// `_` and `+`: atext in a local part, never in a domain.
    local_only: u64,
    at: u64,
    close: u64,
    /// Upper-case letters (also in `alnum`).
    upper: u64,
    /// `+` (also in `local_only`).
    plus: u64,
}

impl Masks {
    /// The masks of `path`'s first [`WINDOW`] octets, up to the vector holding its first
    /// `>`; `None` when they hold no `>`.
    #[inline]
    fn of(path: &[u8]) -> Option<Masks> {
        let mut masks = Masks::default();
        for shift in (0..WINDOW).step_by(16) {
            let mut octets = [0u8; 16];
            match path.get(shift..shift + 16) {
                Some(chunk) => octets.copy_from_slice(chunk),
                // The end of a buffer: the zeros after it are no octet a path holds.
                None => {
                    let rest = path.get(shift..).filter(|rest| !rest.is_empty())?;
                    octets[..rest.len()].copy_from_slice(rest);
                }
            }
            let block = classify(octets);
            masks.alnum |= u64::from(block.alnum) << shift;
            masks.dot |= u64::from(block.dot) << shift;
            masks.hyphen |= u64::from(block.hyphen) << shift;
            masks.local_only |= u64::from(block.local_only) << shift;
            masks.at |= u64::from(block.at) << shift;
            masks.close |= u64::from(block.close) << shift;
            masks.upper |= u64::from(block.upper) << shift;
            masks.plus |= u64::from(block.plus) << shift;
            if block.close != 0 {
                return Some(masks);
            }
        }
        None
    }

    /// The mailbox up to the first `>` if everything before it is a plain mailbox (see the
    /// module docs), which is then exactly what the automaton takes.
    #[inline]
    fn plain(&self) -> Option<Plain> {
        let close = self.close.trailing_zeros();
        // `close` < 64: `of` returns only masks with a `>`.
        let before = (1u64 << close) - 1;
        let known = self.alnum | self.dot | self.hyphen | self.local_only | self.at;
        if known & before != before {
            return None;
        }
        // One '@', not first: a local part, then a domain.
        let at = self.at & before;
        if at.count_ones() != 1 || at == 1 {
            return None;
        }
        let local = at - 1;
        let domain = before & !local & !at;
        // Dot-string: no dot first, last, or next to another.
        let local_dots = self.dot & local;
        if local_dots & (1 | (at >> 1)) != 0 || local_dots & (local_dots >> 1) != 0 {
            return None;
        }
        // Domain: labels of letters, digits and inner hyphens, joined by dots. With its
        // first and last octets alphanumeric and a letter or digit on each side of every
        // dot, every label starts and ends with one.
        let domain_alnum = self.alnum & domain;
        let domain_dots = self.dot & domain;
        let first = at << 1;
        let last = 1u64 << (close - 1);
        if domain == 0
            || domain & !(domain_alnum | domain_dots | self.hyphen) != 0
            || domain_alnum & first == 0
            || domain_alnum & last == 0
            || (domain_dots << 1) & !self.alnum != 0
            || (domain_dots >> 1) & !self.alnum != 0
        {
            return None;
        }
        Some(Plain {
            close: close as usize,
            normal: (self.upper | self.plus) & before == 0,
        })
    }
}

/// The class masks of sixteen octets, a bit per octet.
#[derive(Clone, Copy, Debug)]
struct Block {
    alnum: u16,
    dot: u16,
    hyphen: u16,
    local_only: u16,
    at: u16,
    close: u16,
    upper: u16,
    plus: u16,
}

/// Classifies sixteen octets at once: `wide`'s vectors are SSE2 compares on x86-64 (part of
/// every such CPU), NEON on aarch64, and plain loops elsewhere, all without `unsafe` here.
#[inline(always)]
fn classify(octets: [u8; 16]) -> Block {
    use wide::i8x16;
    // Compares are signed: octets from 0x80 up are negative and fall in no range below.
    let v = i8x16::new(octets.map(|b| b as i8));
    let splat = |b: u8| i8x16::splat(b as i8);
    let within =
        |x: i8x16, low: u8, high: u8| x.simd_gt(splat(low - 1)) & x.simd_lt(splat(high + 1));
    let mask = |x: i8x16| x.to_bitmask() as u16;
    let eq = |b: u8| v.simd_eq(splat(b));
    // `| 0x20` maps `A`..=`Z` onto `a`..=`z` and nothing else into that range.
    let letter = within(v | splat(0x20), b'a', b'z');
    let digit = within(v, b'0', b'9');
    let plus = eq(b'+');
    Block {
        alnum: mask(letter | digit),
        dot: mask(eq(b'.')),
        hyphen: mask(eq(b'-')),
        local_only: mask(eq(b'_') | plus),
        at: mask(eq(b'@')),
        close: mask(eq(b'>')),
        upper: mask(within(v, b'A', b'Z')),
        plus: mask(plus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_what_is_left_to_the_automaton() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"ann@x.org>", Some(9)),
            (b"Ann.Lee+news_1@Mail-1.Example.COM>\r\nRCPT", Some(33)),
            (b"a@b>", Some(3)),
            (b"a-b@x--y.z>", Some(10)),
            // Left to the automaton: other atext, long paths, no '>' in the window.
            (b"a=b@x.org>", None),
            (b"ann@x.org", None),
            (b"ann@x.org\r\n", None),
            // Not plain; the automaton or the full grammar decides.
            (b">", None),
            (b"@x.org>", None),
            (b"ann>", None),
            (b"a@b@c>", None),
            (b".a@b>", None),
            (b"a.@b>", None),
            (b"a..b@c>", None),
            (b"a@>", None),
            (b"a@.b>", None),
            (b"a@b.>", None),
            (b"a@b..c>", None),
            (b"a@-b>", None),
            (b"a@b->", None),
            (b"a@b-.c>", None),
            (b"a@b.-c>", None),
            (b"a@b_c>", None),
            (b"a@b+c>", None),
            (b"a b@c>", None),
            (b"a@b\x80c>", None),
            (b"a@b\0c>", None),
        ];
        for &(path, expected) in cases {
            assert_eq!(
                plain_path(path).map(|plain| plain.close),
                expected,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn the_window_is_the_limit() {
        let local = "l".repeat(30);
        let fits = format!("{local}@{}.org>", "d".repeat(WINDOW - 36));
        assert_eq!(fits.len(), WINDOW);
        assert_eq!(
            plain_path(fits.as_bytes()),
            Some(Plain {
                close: WINDOW - 1,
                normal: true
            })
        );
        let longer = format!("{local}@{}.org>", "d".repeat(WINDOW - 35));
        assert_eq!(plain_path(longer.as_bytes()), None);
    }

    #[test]
    fn normal_means_no_upper_case_letter_and_no_plus_in_the_mailbox() {
        let cases: &[(&[u8], bool)] = &[
            (b"ann.lee_1@mail-1.example.com>", true),
            (b"a@b>", true),
            (b"Ann@x.org>", false),
            (b"ann@x.Org>", false),
            (b"ann@X.ORG>", false),
            (b"ann+news@x.org>", false),
            (b"+ann@x.org>", false),
            // Only the mailbox counts, not what follows its `>`.
            (b"ann@x.org>\r\nRCPT TO:<A+B@x.org>", true),
            // Upper case and `+` in every vector of the window.
            (
                b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@x.org>",
                true,
            ),
            (
                b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@x.orG>",
                false,
            ),
            (
                b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb+bbbbbbbbbbbb@x.org>",
                false,
            ),
            (
                b"bbbbbbbbbbbbbbbbbbbBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@x.org>",
                false,
            ),
        ];
        for &(path, normal) in cases {
            let shown = String::from_utf8_lossy(path);
            let plain = plain_path(path).unwrap_or_else(|| panic!("plain: {shown}"));
            assert_eq!(plain.normal, normal, "{shown}");
        }
    }

    /// Octets a path's vectors span, each class at each place of a vector.
    #[test]
    fn every_octet_is_classified_as_the_byte_rules_say() {
        for b in 0..=255u8 {
            for place in 0..16 {
                let mut octets = [b'a'; 16];
                octets[place] = b;
                let block = classify(octets);
                let bit = |mask: u16| mask >> place & 1 == 1;
                assert_eq!(bit(block.alnum), b.is_ascii_alphanumeric(), "{b:#x}");
                assert_eq!(bit(block.dot), b == b'.');
                assert_eq!(bit(block.hyphen), b == b'-');
                assert_eq!(bit(block.local_only), b == b'_' || b == b'+');
                assert_eq!(bit(block.at), b == b'@');
                assert_eq!(bit(block.close), b == b'>');
                assert_eq!(bit(block.upper), b.is_ascii_uppercase());
                assert_eq!(bit(block.plus), b == b'+');
            }
        }
    }
}
