//! Names from the configuration — purposes, API clients, carriers, routes — as
//! 8-byte handles that copy for free.
//!
//! Every live verification holds three or four of them. As `Arc<str>` each took 16
//! bytes, and each copy an atomic increment on a counter that every worker shares.
//! A [`Name`] is interned instead, once for the life of the process: the names a
//! deployment uses are few and fixed by its configuration, and the ones read back
//! from stored records are names some node's configuration had.
//!
//! Stored records are still input from outside this process (a shared Redis), so
//! the table is bounded: past [`MAX_NAMES`] distinct names, a name not yet known
//! reads as [`OVERFLOW`] rather than growing the table.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

/// Distinct names kept at most. A configuration has tens of purposes, clients and
/// carriers, but a route table can name thousands of prefixes; at about 50 bytes a
/// name, the full table is 3 MB.
pub const MAX_NAMES: usize = 1 << 16;

/// What a name reads as once [`MAX_NAMES`] are taken.
pub const OVERFLOW: &str = "(too many names)";

/// The longest name kept as it is; a longer one is cut (at a character boundary),
/// so that a stored record cannot make the table hold large strings.
pub const MAX_LEN: usize = 256;

/// An interned name: a thin pointer to a string that lives as long as the process.
#[derive(Clone, Copy)]
pub struct Name(&'static &'static str);

static TABLE: LazyLock<Interner> = LazyLock::new(|| Interner::new(MAX_NAMES));

impl Name {
    /// The handle of `name`, interning it the first time it is seen.
    pub fn new(name: &str) -> Name {
        TABLE.intern(name)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// The table of names, bounded.
struct Interner {
    names: RwLock<HashSet<Name>>,
    limit: usize,
    warned: AtomicBool,
}

impl Interner {
    fn new(limit: usize) -> Interner {
        Interner {
            names: RwLock::default(),
            limit,
            warned: AtomicBool::new(false),
        }
    }

    fn intern(&self, name: &str) -> Name {
        let name = cut(name);
        if let Some(known) = self.names.read().get(name) {
            return *known;
        }
        let mut names = self.names.write();
        if let Some(known) = names.get(name) {
            return *known;
        }
        // OVERFLOW itself is always let in, as the one name past the limit.
        let name = if names.len() < self.limit {
            name
        } else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    limit = self.limit,
                    "more distinct names (purposes, clients, carriers, routes) than \
                     kept; new ones read as {OVERFLOW:?}"
                );
            }
            if let Some(known) = names.get(OVERFLOW) {
                return *known;
            }
            OVERFLOW
        };
        let interned = Name(Box::leak(Box::new(&*Box::leak(Box::<str>::from(name)))));
        names.insert(interned);
        interned
    }
}

fn cut(name: &str) -> &str {
    if name.len() <= MAX_LEN {
        return name;
    }
    let mut end = MAX_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        // Interned: one string, one handle.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

/// Hashed as its text, as [`Borrow<str>`] requires.
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Name {
        Name::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_string_one_handle() {
        let a = Name::new("movistar-name-test");
        let b = Name::new(&String::from("movistar-name-test"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.0, b.0));
        assert_eq!(&*a, "movistar-name-test");
        assert_ne!(a, Name::new("vodafone-name-test"));
        assert_eq!(std::mem::size_of::<Name>(), 8);
        assert_eq!(std::mem::size_of::<Option<Name>>(), 8);
    }

    #[test]
    fn looked_up_by_text_in_maps() {
        let mut m = std::collections::HashMap::new();
        m.insert(Name::new("login-name-test"), 1);
        assert_eq!(m.get("login-name-test"), Some(&1));
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_LEN);
        let n = Name::new(&long);
        assert!(n.len() <= MAX_LEN);
        assert!(long.starts_with(&*n));
        assert_eq!(n.len(), MAX_LEN);
    }

    #[test]
    fn past_the_limit_new_names_read_as_overflow() {
        let table = Interner::new(2);
        let a = table.intern("a");
        let b = table.intern("b");
        assert_eq!(&*table.intern("c"), OVERFLOW);
        assert_eq!(&*table.intern("d"), OVERFLOW);
        // Names already known are still themselves.
        assert_eq!(table.intern("a"), a);
        assert_eq!(table.intern("b"), b);
        assert_eq!(table.names.read().len(), 3);
    }

    #[test]
    fn ordered_and_shown_as_text() {
        assert!(Name::new("a-name-test") < Name::new("b-name-test"));
        assert_eq!(format!("{}", Name::new("x-name-test")), "x-name-test");
        assert_eq!(format!("{:?}", Name::new("x-name-test")), "\"x-name-test\"");
    }
}
