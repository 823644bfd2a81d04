//! A vector that grows by whole chunks and never moves what it holds.
//!
//! The embedded store keeps its records in one slab per shard. A `Vec` doubles by
//! copying everything into a fresh allocation, and the shards, filled evenly, all
//! reach their next power of two within the same fraction of a second: under
//! national load that was hundreds of megabytes copied and as many fresh pages
//! faulted in at once, each copy under its shard's lock, and every request stalled
//! for tens of milliseconds. Here growth adds one chunk; nothing is copied, and the
//! pages of a chunk are touched as its slots are filled.

use std::ops::{Index, IndexMut};

/// Slots per chunk (a power of two, so an index splits with a shift and a mask).
const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Debug)]
pub struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedVec<T> {
    /// Slots ever pushed (the store reuses them through its free list).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append `value`; returns its index.
    pub fn push(&mut self, value: T) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        chunk.push(value);
        self.len += 1;
        self.len - 1
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks
            .get_mut(i >> CHUNK_BITS)?
            .get_mut(i & (CHUNK - 1))
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(v) => v,
            None => panic!("index {i} out of bounds (len {})", self.len),
        }
    }
}

impl<T> IndexMut<usize> for ChunkedVec<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(i) {
            Some(v) => v,
            None => panic!("index {i} out of bounds (len {len})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_cross_chunks_and_values_stay_in_place() {
        let mut v = ChunkedVec::default();
        assert_eq!(v.len(), 0);
        for i in 0..(3 * CHUNK + 5) {
            assert_eq!(v.push(i * 2), i);
        }
        assert_eq!(v.len(), 3 * CHUNK + 5);
        let first_of_second: *const usize = &v[CHUNK];
        for i in 0..CHUNK {
            v.push(i);
        }
        // Growth added chunks; nothing already held moved.
        assert!(std::ptr::eq(first_of_second, &v[CHUNK]));
        assert_eq!(v[CHUNK - 1], (CHUNK - 1) * 2);
        assert_eq!(v[2 * CHUNK + 3], (2 * CHUNK + 3) * 2);
        v[7] = 1;
        assert_eq!(v.get(7), Some(&1));
        assert_eq!(v.get(v.len()), None);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn an_index_past_the_end_panics_like_a_vec() {
        let mut v = ChunkedVec::default();
        v.push(1u8);
        let _ = v[1];
    }
}
