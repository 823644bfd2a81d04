//! Prefix routing: which carriers a number goes to. The longest configured prefix of
//! the number's digits wins (`3460012` before `346` before `34`), a default route
//! catches the rest, and a prefix can be blocked.
//!
//! The table is a digit trie in one flat `Vec` (ten child slots per node), so a lookup
//! reads at most 15 nodes whatever the size of the table, and building it once per
//! configuration load is all the allocation there is. Pure: no I/O, no clock.

use crate::domain::name::Name;
use crate::numbers::e164::E164;

/// One carrier of a route: lower `priority` is tried first; among equal priorities,
/// `weight` shares the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierChoice {
    pub carrier: Name,
    pub priority: u32,
    pub weight: u32,
}

/// What a prefix leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Carriers, in configuration order (see [`Target::order`] for the sending order).
    Carriers(Vec<CarrierChoice>),
    /// Numbers under this prefix are not sent to.
    Blocked,
}

impl Target {
    /// The carriers in the order to try them: by priority, and within a priority in a
    /// weighted random order drawn from `seed` (each carrier leads its group with a
    /// chance proportional to its weight). Zero-weight carriers come last in their
    /// group: standby.
    pub fn order(&self, mut seed: u64) -> Vec<Name> {
        let Target::Carriers(carriers) = self else {
            return Vec::new();
        };
        if let [only] = carriers.as_slice() {
            return vec![only.carrier];
        }
        let mut sorted: Vec<&CarrierChoice> = carriers.iter().collect();
        sorted.sort_by_key(|c| c.priority);
        let mut out = Vec::with_capacity(sorted.len());
        for group in sorted.chunk_by(|a, b| a.priority == b.priority) {
            let mut left: Vec<&CarrierChoice> = group.to_vec();
            while !left.is_empty() {
                let total: u64 = left.iter().map(|c| u64::from(c.weight)).sum();
                let pick = if total == 0 {
                    0
                } else {
                    seed = splitmix(seed);
                    let mut r = seed % total;
                    left.iter()
                        .position(|c| {
                            let w = u64::from(c.weight);
                            if r < w {
                                true
                            } else {
                                r -= w;
                                false
                            }
                        })
                        .unwrap_or(0)
                };
                out.push(left.remove(pick).carrier);
            }
        }
        out
    }
}

/// A well-mixed next value from a seed (SplitMix64): good enough to spread traffic,
/// and deterministic for tests.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The route a number took: the prefix that matched (empty for the default) and
/// where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'a> {
    pub prefix: &'a str,
    /// The prefix, or `default`, shared: what the delivery history records.
    pub name: Name,
    pub target: &'a Target,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    #[error("prefix `{0}` is not 1 to 15 digits")]
    BadPrefix(String),
    #[error("prefix `{0}` is configured twice")]
    Duplicate(String),
    #[error("prefix `{0}` has no carrier (give one, or block it)")]
    NoCarrier(String),
}

const NONE: u32 = u32::MAX;

#[derive(Clone)]
struct Node {
    children: [u32; 10],
    /// Index into `routes`, or `NONE`.
    route: u32,
}

impl Node {
    fn empty() -> Self {
        Self {
            children: [NONE; 10],
            route: NONE,
        }
    }
}

pub struct RouteTable {
    nodes: Vec<Node>,
    routes: Vec<(Box<str>, Target)>,
    /// [`Matched::name`] of each route, and of the default.
    names: Vec<Name>,
    default_name: Name,
    default: Option<Target>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("prefixes", &self.routes.len())
            .field("nodes", &self.nodes.len())
            .field("default", &self.default.is_some())
            .finish()
    }
}

/// The digits of a number, most significant first, and how many there are.
fn digits_of(number: E164) -> ([u8; 20], usize) {
    let mut buf = [0u8; 20];
    let mut n = number.digits();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = buf.len() - i;
    buf.copy_within(i.., 0);
    (buf, len)
}

impl RouteTable {
    pub fn new(
        routes: impl IntoIterator<Item = (String, Target)>,
        default: Option<Target>,
    ) -> Result<Self, RouteError> {
        let mut table = Self {
            nodes: vec![Node::empty()],
            routes: Vec::new(),
            names: Vec::new(),
            default_name: Name::new("default"),
            default,
        };
        for (prefix, target) in routes {
            if prefix.is_empty() || prefix.len() > 15 || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(RouteError::BadPrefix(prefix));
            }
            if matches!(&target, Target::Carriers(c) if c.is_empty()) {
                return Err(RouteError::NoCarrier(prefix));
            }
            let mut node = 0usize;
            for b in prefix.bytes() {
                let d = (b - b'0') as usize;
                let next = table.nodes[node].children[d];
                node = if next == NONE {
                    table.nodes.push(Node::empty());
                    let new = (table.nodes.len() - 1) as u32;
                    table.nodes[node].children[d] = new;
                    new as usize
                } else {
                    next as usize
                };
            }
            if table.nodes[node].route != NONE {
                return Err(RouteError::Duplicate(prefix));
            }
            table.nodes[node].route = table.routes.len() as u32;
            table.names.push(Name::new(prefix.as_str()));
            table.routes.push((prefix.into_boxed_str(), target));
        }
        Ok(table)
    }

    /// The longest configured prefix of `number`, else the default route.
    pub fn lookup(&self, number: E164) -> Option<Matched<'_>> {
        let (digits, len) = digits_of(number);
        let mut node = 0usize;
        let mut best = NONE;
        for &d in &digits[..len] {
            let next = self.nodes[node].children[d as usize];
            if next == NONE {
                break;
            }
            node = next as usize;
            if self.nodes[node].route != NONE {
                best = self.nodes[node].route;
            }
        }
        if best != NONE {
            let (prefix, target) = &self.routes[best as usize];
            return Some(Matched {
                prefix,
                name: self.names[best as usize],
                target,
            });
        }
        self.default.as_ref().map(|target| Matched {
            prefix: "",
            name: self.default_name,
            target,
        })
    }

    /// The configured prefixes and their targets, in configuration order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.routes.iter().map(|(p, t)| (&**p, t))
    }

    /// Every route and the default, with its prefix (`default` for the default).
    pub fn targets(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.routes()
            .chain(self.default.as_ref().map(|t| ("default", t)))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn carriers(names: &[(&str, u32, u32)]) -> Target {
        Target::Carriers(
            names
                .iter()
                .map(|(n, p, w)| CarrierChoice {
                    carrier: Name::new(n),
                    priority: *p,
                    weight: *w,
                })
                .collect(),
        )
    }

    fn number(digits: u64) -> E164 {
        E164::from_digits_unchecked(digits)
    }

    fn table() -> RouteTable {
        RouteTable::new(
            [
                ("34".to_string(), carriers(&[("movistar", 1, 1)])),
                ("346".to_string(), carriers(&[("vodafone", 1, 1)])),
                ("3460012".to_string(), carriers(&[("orange", 1, 1)])),
                ("7".to_string(), Target::Blocked),
                ("44".to_string(), carriers(&[("bt", 1, 1)])),
            ],
            Some(carriers(&[("global", 1, 1)])),
        )
        .unwrap()
    }

    fn carrier_of(t: &RouteTable, n: u64) -> (String, String) {
        let m = t.lookup(number(n)).unwrap();
        let name = match m.target {
            Target::Carriers(c) => c[0].carrier.to_string(),
            Target::Blocked => "blocked".into(),
        };
        (m.prefix.to_string(), name)
    }

    #[test]
    fn the_longest_prefix_wins_and_the_default_catches_the_rest() {
        let t = table();
        let r = |n| carrier_of(&t, n);
        assert_eq!(r(34_600_123_456), ("3460012".into(), "orange".into()));
        assert_eq!(r(34_600_223_456), ("346".into(), "vodafone".into()));
        assert_eq!(r(34_912_345_678), ("34".into(), "movistar".into()));
        assert_eq!(r(79_161_234_567), ("7".into(), "blocked".into()));
        assert_eq!(r(447_700_900_123), ("44".into(), "bt".into()));
        assert_eq!(r(33_612_345_678), ("".into(), "global".into()));
        let no_default = RouteTable::new([("34".to_string(), Target::Blocked)], None).unwrap();
        assert!(no_default.lookup(number(33_612_345_678)).is_none());
    }

    #[test]
    fn bad_tables_are_refused_with_the_prefix_named() {
        let one = |p: &str, t: Target| RouteTable::new([(p.to_string(), t)], None).unwrap_err();
        assert_eq!(
            one("3a", Target::Blocked),
            RouteError::BadPrefix("3a".into())
        );
        assert_eq!(one("", Target::Blocked), RouteError::BadPrefix("".into()));
        assert_eq!(
            one(&"1".repeat(16), Target::Blocked),
            RouteError::BadPrefix("1".repeat(16))
        );
        assert_eq!(
            one("34", Target::Carriers(vec![])),
            RouteError::NoCarrier("34".into())
        );
        let dup = RouteTable::new(
            [
                ("34".to_string(), Target::Blocked),
                ("34".to_string(), Target::Blocked),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(dup, RouteError::Duplicate("34".into()));
    }

    #[test]
    fn order_follows_priority_then_weight() {
        let t = carriers(&[("a", 2, 1), ("b", 1, 3), ("c", 1, 1), ("standby", 1, 0)]);
        let mut first_b = 0;
        for seed in 0..4000 {
            let order = t.order(seed);
            assert_eq!(order.len(), 4);
            assert_eq!(&*order[3], "a", "priority 2 comes after every priority 1");
            assert_eq!(&*order[2], "standby", "weight 0 is last of its priority");
            first_b += usize::from(&*order[0] == "b");
        }
        // b has 3 of the 4 weight units of its priority: it leads about 75% of the time.
        assert!((2800..3200).contains(&first_b), "{first_b}");
        assert!(Target::Blocked.order(1).is_empty());
    }

    proptest! {
        /// The trie answers what a scan of every prefix answers.
        #[test]
        fn the_trie_agrees_with_a_scan(
            prefixes in proptest::collection::btree_set("[1-9][0-9]{0,6}", 1..60),
            numbers in proptest::collection::vec(1_000_000u64..999_999_999_999_999, 1..60),
        ) {
            let routes: Vec<(String, Target)> = prefixes
                .iter()
                .map(|p| (p.clone(), carriers(&[(p.as_str(), 1, 1)])))
                .collect();
            let t = RouteTable::new(routes.clone(), None).unwrap();
            for n in numbers {
                let text = n.to_string();
                let scan = routes
                    .iter()
                    .filter(|(p, _)| text.starts_with(p.as_str()))
                    .max_by_key(|(p, _)| p.len())
                    .map(|(p, _)| p.as_str());
                prop_assert_eq!(t.lookup(number(n)).map(|m| m.prefix), scan);
            }
        }
    }
}
