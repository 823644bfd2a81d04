//! [`ThinStr`]: a string behind one pointer, for text a verification rarely has.
//!
//! A verification lives in memory for its whole retention, millions at a time, and
//! some of its text is usually absent: why a send failed, for one. `Option<Box<str>>`
//! takes 16 bytes for that absence; `Option<ThinStr>` takes 8, the length living
//! in the allocation beside the bytes.

use std::fmt;

use thin_vec::ThinVec;

/// Immutable UTF-8 text, one pointer wide.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ThinStr(ThinVec<u8>);

impl ThinStr {
    pub fn new(text: &str) -> ThinStr {
        ThinStr(ThinVec::from(text.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Only ever made from a `str` (see `new`), and never changed.
        std::str::from_utf8(&self.0).expect("a ThinStr holds UTF-8")
    }
}

impl std::ops::Deref for ThinStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ThinStr {
    fn from(text: &str) -> ThinStr {
        ThinStr::new(text)
    }
}

impl From<String> for ThinStr {
    fn from(text: String) -> ThinStr {
        ThinStr::new(&text)
    }
}

impl PartialEq<str> for ThinStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Debug for ThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_its_text_in_one_pointer() {
        assert_eq!(std::mem::size_of::<Option<ThinStr>>(), 8);
        let t = ThinStr::new("bind lost: «x»");
        assert_eq!(&*t, "bind lost: «x»");
        assert_eq!(t, *ThinStr::from(String::from("bind lost: «x»")));
        assert_eq!(format!("{t:?}"), "\"bind lost: «x»\"");
        assert_eq!(ThinStr::default().as_str(), "");
    }
}
