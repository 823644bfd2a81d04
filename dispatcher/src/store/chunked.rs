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

/// Bytes per chunk at most: a chunk holds as many slots as fit, so that its size is
/// set in bytes, not in slots. The allocator serves a block this large from pages
/// of its own, and what it keeps beyond the block depends on the block's size: with
/// 1 024 slots of 288 bytes (295 KB a chunk) the process held 58 bytes per
/// verification more than it had asked for; with 64 KiB chunks, 5 (`memory` tool,
/// 1 M verifications, mimalloc). 32, 128 and 256 KiB measured 7, 5 and 5.
const CHUNK_BYTES: usize = 1 << 16;

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
    /// Slots per chunk (a constant per `T`, so an index splits with a multiply).
    const SLOTS: usize = {
        let size = std::mem::size_of::<T>();
        if size == 0 || size >= CHUNK_BYTES {
            1
        } else {
            CHUNK_BYTES / size
        }
    };

    /// Slots ever pushed (the store reuses them through its free list).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append `value`; returns its index.
    pub fn push(&mut self, value: T) -> usize {
        if self.len.is_multiple_of(Self::SLOTS) {
            self.chunks.push(Vec::with_capacity(Self::SLOTS));
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        chunk.push(value);
        self.len += 1;
        self.len - 1
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / Self::SLOTS)?.get(i % Self::SLOTS)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks
            .get_mut(i / Self::SLOTS)?
            .get_mut(i % Self::SLOTS)
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
        const CHUNK: usize = ChunkedVec::<usize>::SLOTS;
        assert_eq!(CHUNK * std::mem::size_of::<usize>(), CHUNK_BYTES);
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
    fn a_chunk_holds_what_fits_and_at_least_one() {
        assert_eq!(ChunkedVec::<[u8; 300]>::SLOTS, CHUNK_BYTES / 300);
        assert_eq!(ChunkedVec::<[u8; CHUNK_BYTES + 1]>::SLOTS, 1);
        assert_eq!(ChunkedVec::<()>::SLOTS, 1);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn an_index_past_the_end_panics_like_a_vec() {
        let mut v = ChunkedVec::default();
        v.push(1u8);
        let _ = v[1];
    }
}
