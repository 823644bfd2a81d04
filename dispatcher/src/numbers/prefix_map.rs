//! Number prefixes (`+88213`) mapped to values, longest match first: the prefix
//! limits and the pumping allow and deny lists. Lists are short and lengths few, so
//! a lookup is one hash probe per distinct configured length.

use std::collections::HashMap;

use crate::numbers::e164::E164;

#[derive(Debug, Clone)]
pub struct PrefixMap<T> {
    /// Distinct prefix lengths, longest first.
    lengths: Vec<u8>,
    map: HashMap<(u8, u64), T>,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        Self {
            lengths: Vec::new(),
            map: HashMap::new(),
        }
    }
}

/// The decimal digits of a number and how many there are.
pub fn digit_count(digits: u64) -> u8 {
    let mut n = 1;
    let mut rest = digits / 10;
    while rest > 0 {
        n += 1;
        rest /= 10;
    }
    n
}

/// The first `len` digits of `number` (all of them when it is shorter).
pub fn leading(number: E164, len: u8) -> (u64, u8) {
    let digits = number.digits();
    let count = digit_count(digits);
    if count <= len {
        (digits, count)
    } else {
        (digits / 10u64.pow(u32::from(count - len)), len)
    }
}

impl<T> PrefixMap<T> {
    /// `(digits, length)` pairs; a later duplicate replaces an earlier one.
    pub fn new(entries: impl IntoIterator<Item = ((u64, u8), T)>) -> Self {
        let mut map = HashMap::new();
        for ((digits, len), value) in entries {
            map.insert((len, digits), value);
        }
        let mut lengths: Vec<u8> = map.keys().map(|(len, _)| *len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Self { lengths, map }
    }

    /// The longest prefix of `number` in the map, as `(digits, length)`, and its value.
    pub fn lookup(&self, number: E164) -> Option<((u64, u8), &T)> {
        let digits = number.digits();
        let count = digit_count(digits);
        self.lengths.iter().find_map(|&len| {
            if len > count {
                return None;
            }
            let prefix = digits / 10u64.pow(u32::from(count - len));
            self.map.get(&(len, prefix)).map(|v| ((prefix, len), v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(digits: u64) -> E164 {
        E164::from_digits_unchecked(digits)
    }

    #[test]
    fn the_longest_prefix_wins() {
        let m = PrefixMap::new([
            ((34, 2), "es"),
            ((3460012, 7), "block"),
            ((88213, 5), "sat"),
        ]);
        assert_eq!(m.lookup(n(34600123456)).map(|(_, v)| *v), Some("block"));
        assert_eq!(m.lookup(n(34611123456)), Some(((34, 2), &"es")));
        assert_eq!(m.lookup(n(882130000001)).map(|(_, v)| *v), Some("sat"));
        assert_eq!(m.lookup(n(33612345678)), None);
        assert!(PrefixMap::<()>::default().lookup(n(34)).is_none());
    }

    #[test]
    fn leading_digits() {
        assert_eq!(leading(n(34600123456), 6), (346001, 6));
        assert_eq!(leading(n(1234), 6), (1234, 4));
        assert_eq!(digit_count(0), 1);
        assert_eq!(digit_count(999_999_999_999_999), 15);
    }
}
