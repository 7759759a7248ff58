//! An array cut into chunks of [`CHUNK`] elements, each behind an `Arc`: the tables that
//! grow with the access domains (their rows, their routes, the routes' slots and active
//! pools) are held this way, so that a reload that changes a few access domains copies
//! the chunks it writes and shares every other one with the snapshot it replaces. An
//! element costs one more load than in a flat array (the chunk's pointer, from a
//! directory of a few kilobytes that stays in cache).

use std::sync::Arc;

/// Elements per chunk (a power of two).
pub const CHUNK: usize = 1 << CHUNK_BITS;
#[cfg(not(test))]
const CHUNK_BITS: u32 = 16;
/// Small chunks under test, so that models of a few hundred routes span many of them and
/// the sharing of whole chunks is exercised.
#[cfg(test)]
const CHUNK_BITS: u32 = 4;

/// A chunked array (see the module).
pub struct Chunked<T> {
    chunks: Box<[Arc<[T]>]>,
    len: usize,
}

impl<T> Chunked<T> {
    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`, if there is one.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    /// Every element, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The elements `range` holds, in order.
    pub fn range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &T> + '_ {
        range.map(move |i| &self[i])
    }

    /// The elements `range` holds, as the slices of the chunks they lie in, in order
    /// (for copies a slice at a time rather than an element at a time).
    pub fn slices(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &[T]> + '_ {
        let end = range.end.min(self.len);
        let first = range.start >> CHUNK_BITS;
        let last = end.div_ceil(CHUNK);
        (first..last.max(first)).filter_map(move |c| {
            let from = (c * CHUNK).max(range.start) - c * CHUNK;
            let to = ((c + 1) * CHUNK).min(end) - c * CHUNK;
            (from < to).then(|| &self.chunks[c][from..to])
        })
    }

    /// Whether chunk `c` is shared with `other` (the same allocation).
    pub fn shares_chunk(&self, other: &Self, c: usize) -> bool {
        match (self.chunks.get(c), other.chunks.get(c)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// An array of `len` elements made by `f(i)`, in chunks.
    pub fn from_fn(len: usize, mut f: impl FnMut(usize) -> T) -> Self {
        let chunks = (0..len.div_ceil(CHUNK))
            .map(|c| {
                let end = ((c + 1) * CHUNK).min(len);
                (c * CHUNK..end).map(&mut f).collect::<Arc<[T]>>()
            })
            .collect();
        Self { chunks, len }
    }

    /// `len` elements (`self`'s first, new ones after, or fewer): the chunks that hold one of
    /// `touched` (indices, in any order), or that `self` does not hold whole, made afresh
    /// by `fresh(i)` for each of their elements; every other chunk shared with `self`.
    pub fn with_fresh_chunks(
        &self,
        len: usize,
        touched: impl Iterator<Item = usize>,
        mut fresh: impl FnMut(usize) -> T,
    ) -> Self {
        let n = len.div_ceil(CHUNK);
        let mut redo = vec![false; n];
        for i in touched {
            if let Some(r) = redo.get_mut(i >> CHUNK_BITS) {
                *r = true;
            }
        }
        let chunks = (0..n)
            .map(|c| {
                let end = ((c + 1) * CHUNK).min(len);
                match self.chunks.get(c) {
                    Some(old) if !redo[c] && old.len() == end - c * CHUNK => old.clone(),
                    _ => (c * CHUNK..end).map(&mut fresh).collect(),
                }
            })
            .collect();
        Self { chunks, len }
    }
}

impl<T> Chunked<T> {
    /// An array of `len` elements whose whole chunks among the first `keep` are shared
    /// with `self`'s, the rest made by `fresh(i)`.
    pub fn sharing_prefix(
        &self,
        keep: usize,
        len: usize,
        mut fresh: impl FnMut(usize) -> T,
    ) -> Self {
        let whole = keep.min(len).min(self.len) >> CHUNK_BITS;
        let chunks = (0..len.div_ceil(CHUNK))
            .map(|c| match c < whole {
                true => self.chunks[c].clone(),
                false => (c * CHUNK..((c + 1) * CHUNK).min(len))
                    .map(&mut fresh)
                    .collect(),
            })
            .collect();
        Self { chunks, len }
    }
}

impl<T: Clone> Chunked<T> {
    /// Element `i` to write, its chunk copied first if another array shares it.
    pub fn make_mut(&mut self, i: usize) -> &mut T {
        let c = &mut self.chunks[i >> CHUNK_BITS];
        if Arc::get_mut(c).is_none() {
            *c = c.iter().cloned().collect();
        }
        match Arc::get_mut(c) {
            Some(chunk) => &mut chunk[i & (CHUNK - 1)],
            None => unreachable!("a chunk just copied has one owner"),
        }
    }
}

impl<T> Clone for Chunked<T> {
    /// Shares every chunk.
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Box::new([]),
            len: 0,
        }
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Chunked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Builds a [`Chunked`] by pushing, through one chunk-sized buffer reused from chunk to
/// chunk (the only transient is that buffer).
pub struct Builder<T: Copy> {
    done: Vec<Arc<[T]>>,
    cur: Vec<T>,
}

impl<T: Copy> Default for Builder<T> {
    fn default() -> Self {
        Self {
            done: Vec::new(),
            cur: Vec::new(),
        }
    }
}

impl<T: Copy> Builder<T> {
    /// A builder holding the first `len` elements of `src`: its whole chunks among them
    /// shared, the rest copied.
    pub fn from_prefix(src: &Chunked<T>, len: usize) -> Self {
        let len = len.min(src.len);
        let whole = len >> CHUNK_BITS;
        let mut cur = Vec::new();
        if !len.is_multiple_of(CHUNK) {
            cur.reserve_exact(CHUNK);
            cur.extend_from_slice(&src.chunks[whole][..len % CHUNK]);
        }
        Self {
            done: src.chunks[..whole].to_vec(),
            cur,
        }
    }

    /// Elements pushed so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.done.len() * CHUNK + self.cur.len()
    }

    /// Nothing pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `v`.
    #[inline]
    pub fn push(&mut self, v: T) {
        if self.cur.capacity() == 0 {
            self.cur.reserve_exact(CHUNK);
        }
        self.cur.push(v);
        if self.cur.len() == CHUNK {
            self.done.push(Arc::from(&self.cur[..]));
            self.cur.clear();
        }
    }

    /// Appends every element of `it`.
    pub fn extend(&mut self, it: impl IntoIterator<Item = T>) {
        for v in it {
            self.push(v);
        }
    }

    /// Appends `src`'s elements in `range`, each mapped by `f`, a chunk's slice at a
    /// time (a million access domains' rows copied after an edit: an element at a time,
    /// through two chunk lookups each, was most of that reload).
    pub fn extend_from(
        &mut self,
        src: &Chunked<T>,
        range: std::ops::Range<usize>,
        f: impl Fn(&T) -> T,
    ) {
        for mut part in src.slices(range) {
            while !part.is_empty() {
                if self.cur.capacity() == 0 {
                    self.cur.reserve_exact(CHUNK);
                }
                let n = part.len().min(CHUNK - self.cur.len());
                self.cur.extend(part[..n].iter().map(&f));
                part = &part[n..];
                if self.cur.len() == CHUNK {
                    self.done.push(Arc::from(&self.cur[..]));
                    self.cur.clear();
                }
            }
        }
    }

    /// The array.
    pub fn finish(mut self) -> Chunked<T> {
        let len = self.len();
        if !self.cur.is_empty() {
            self.done.push(Arc::from(&self.cur[..]));
        }
        Chunked {
            chunks: self.done.into(),
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built, indexed, iterated and written like a vector, sharing what was not written.
    #[test]
    fn behaves_like_a_vector_and_shares_untouched_chunks() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let mut b = Builder::default();
            b.extend(0..n as u32);
            let a = b.finish();
            assert_eq!(a.len(), n);
            assert!(a.iter().copied().eq(0..n as u32));
            assert!((0..n).all(|i| a[i] == i as u32 && a.get(i) == Some(&(i as u32))));
            assert!(a.get(n).is_none());
            let mut m = a.clone();
            if n > CHUNK + 2 {
                *m.make_mut(CHUNK + 1) = 7;
                assert_eq!((a[CHUNK + 1], m[CHUNK + 1]), ((CHUNK + 1) as u32, 7));
                assert!(m.shares_chunk(&a, 0) && !m.shares_chunk(&a, 1));
                let f = a.with_fresh_chunks(n, [CHUNK + 2].into_iter(), |i| i as u32 + 1);
                assert!(f.shares_chunk(&a, 0) && !f.shares_chunk(&a, 1));
                assert_eq!((f[0], f[CHUNK]), (0, CHUNK as u32 + 1));
            }
            // Longer: the partial last chunk and the new ones are fresh, the rest shared.
            let f = a.with_fresh_chunks(n + 3, std::iter::empty(), |i| i as u32 + 100);
            assert_eq!(f.len(), n + 3);
            let whole = n / CHUNK;
            assert!((0..f.chunks()).all(|c| f.shares_chunk(&a, c) == (c < whole)));
            assert!((0..n + 3).all(|i| f[i] == i as u32 + 100 * (i >= whole * CHUNK) as u32));
            for (keep, len) in [(0, n), (n, n), (CHUNK + 3, n + 5), (n, n / 2)] {
                let s = a.sharing_prefix(keep, len, |i| i as u32 + 1);
                assert_eq!(s.len(), len);
                let whole = keep.min(len).min(n) / CHUNK;
                assert!((0..len).all(|i| s[i] == i as u32 + (i >= whole * CHUNK) as u32));
                assert!((0..s.chunks()).all(|c| s.shares_chunk(&a, c) == (c < whole)));
            }
            let g = Chunked::from_fn(n, |i| i * 2);
            assert!(g.iter().copied().eq((0..n).map(|i| i * 2)));
            for (from, to) in [
                (0, n),
                (1, n),
                (n / 3, n / 2 + CHUNK),
                (n, n),
                (n / 2, n + 9),
            ] {
                let mut b = Builder::from_prefix(&a, 3);
                b.extend_from(&a, from..to, |x| x * 2);
                let got = b.finish();
                let want = (0..3.min(n as u32)).chain((from..to.min(n)).map(|x| x as u32 * 2));
                assert!(got.iter().copied().eq(want), "{from}..{to} of {n}");
                let parts: usize = a.slices(from..to).map(|s| s.len()).sum();
                assert_eq!(parts, to.min(n).saturating_sub(from));
            }
            for keep in [0, 1, n / 2, CHUNK, n] {
                let mut p = Builder::from_prefix(&a, keep);
                let keep = keep.min(n);
                assert_eq!(p.len(), keep);
                p.extend([9, 9]);
                let p = p.finish();
                assert!(p.iter().copied().eq((0..keep as u32).chain([9, 9])));
                for c in 0..keep / CHUNK {
                    assert!(
                        p.shares_chunk(&a, c),
                        "whole chunks of the prefix are shared"
                    );
                }
            }
        }
    }
}
