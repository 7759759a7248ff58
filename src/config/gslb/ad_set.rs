//! The access domains of a model, held as segments: runs of one file's access domains
//! behind that file's `Arc`. A reload that finds an included file unchanged shares that
//! file's access domains with the configuration it replaces instead of reading,
//! validating and holding them twice (`include.rs`). A load takes them in declaration
//! order (the main file's, then each included file's, one segment each); a running
//! server then keeps each access domain where it was, so one added to an early file goes
//! after all the others instead of moving them ([`super::layout`]).

use std::sync::Arc;

use super::AccessDomain;

/// A run of a file's access domains: `len` of them from `start` in `src`.
#[derive(Debug, Clone)]
pub struct Seg {
    src: Arc<[AccessDomain]>,
    start: usize,
    len: usize,
}

impl Seg {
    /// All of `src`.
    pub fn whole(src: Arc<[AccessDomain]>) -> Self {
        let len = src.len();
        Self { src, start: 0, len }
    }

    /// `len` access domains from `start` in `src`.
    pub fn part(src: &Arc<[AccessDomain]>, start: usize, len: usize) -> Self {
        assert!(start + len <= src.len(), "a run within its file");
        Self {
            src: src.clone(),
            start,
            len,
        }
    }

    /// The same access domains (the same run of the same allocation).
    pub fn same(&self, other: &Self) -> bool {
        self.key() == other.key()
    }

    /// What [`Self::same`] compares: the address of the first access domain, and the
    /// number of them.
    pub fn key(&self) -> (*const AccessDomain, usize) {
        (self.as_ptr(), self.len)
    }

    /// The file's access domains it is a run of.
    pub fn source(&self) -> &Arc<[AccessDomain]> {
        &self.src
    }

    /// Where it starts in [`Self::source`].
    pub fn start(&self) -> usize {
        self.start
    }
}

impl std::ops::Deref for Seg {
    type Target = [AccessDomain];
    fn deref(&self) -> &[AccessDomain] {
        &self.src[self.start..self.start + self.len]
    }
}

/// Access domains by index, in segments.
#[derive(Debug, Clone, Default)]
pub struct AdSet {
    segs: Vec<Seg>,
    /// Index one past the last access domain of each segment.
    ends: Vec<usize>,
}

/// The iterator over an [`AdSet`].
pub type Iter<'a> = std::iter::FlatMap<
    std::slice::Iter<'a, Seg>,
    &'a [AccessDomain],
    fn(&'a Seg) -> &'a [AccessDomain],
>;

impl AdSet {
    /// Appends a file's access domains (none: left out).
    pub fn push(&mut self, seg: Arc<[AccessDomain]>) {
        self.push_seg(Seg::whole(seg));
    }

    /// Appends a segment (an empty one is left out).
    pub fn push_seg(&mut self, seg: Seg) {
        if !seg.is_empty() {
            self.ends.push(self.len() + seg.len());
            self.segs.push(seg);
        }
    }

    /// Number of access domains.
    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// No access domain at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Access domain `i` (a binary search over the segments: control side only; what
    /// the answer path needs is compiled into flat tables).
    pub fn get(&self, i: usize) -> Option<&AccessDomain> {
        let k = self.ends.partition_point(|&e| e <= i);
        let start = k.checked_sub(1).map_or(0, |p| self.ends[p]);
        self.segs.get(k)?.get(i - start)
    }

    /// Every access domain, in order.
    pub fn iter(&self) -> Iter<'_> {
        self.segs.iter().flat_map(|s| &s[..])
    }

    /// Every access domain with the address of the one at its place in `other`
    /// (`None` past `other`'s end): the same address is the same access domain, read
    /// once and shared; whole segments of them are passed over.
    pub fn beside<'a>(&'a self, other: &'a Self) -> Beside<'a> {
        Beside {
            a: self,
            b: other,
            at: 0,
            sa: 0,
            sb: 0,
        }
    }

    /// Every access domain with its index, last first.
    pub fn enumerate_rev(&self) -> impl Iterator<Item = (usize, &AccessDomain)> + '_ {
        self.segs
            .iter()
            .zip(&self.ends)
            .rev()
            .flat_map(|(s, &end)| {
                let start = end - s.len();
                s.iter().enumerate().rev().map(move |(k, a)| (start + k, a))
            })
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Seg] {
        &self.segs
    }

    /// The start of segment `k`.
    fn seg_start(&self, k: usize) -> usize {
        k.checked_sub(1).map_or(0, |p| self.ends[p])
    }
}

/// Runs of an [`AdSet`] matched with the places they take in another: see
/// [`AdSet::beside`].
pub struct Beside<'a> {
    a: &'a AdSet,
    b: &'a AdSet,
    /// The index reached, and the segments of each that hold it.
    at: usize,
    sa: usize,
    sb: usize,
}

/// A run of [`Beside`]: from index `at`, the access domains of the first set, and those of
/// the second at the same places (as many, or `None` past its end); `same`: the very
/// same ones.
pub struct Run<'a> {
    pub at: usize,
    pub mine: &'a [AccessDomain],
    pub theirs: Option<&'a [AccessDomain]>,
    pub same: bool,
}

impl<'a> Iterator for Beside<'a> {
    type Item = Run<'a>;
    fn next(&mut self) -> Option<Run<'a>> {
        let seg = self.a.segs.get(self.sa)?;
        let from = self.at - self.a.seg_start(self.sa);
        let mut mine = &seg[from..];
        let theirs = match self.b.segs.get(self.sb) {
            Some(t) => {
                let off = self.at - self.b.seg_start(self.sb);
                let t = &t[off..];
                let n = mine.len().min(t.len());
                mine = &mine[..n];
                Some(&t[..n])
            }
            None => None,
        };
        let run = Run {
            at: self.at,
            mine,
            theirs,
            same: theirs.is_some_and(|t| std::ptr::eq(t.as_ptr(), mine.as_ptr())),
        };
        self.at += mine.len();
        if self.at == self.a.ends[self.sa] {
            self.sa += 1;
        }
        if self.b.ends.get(self.sb) == Some(&self.at) {
            self.sb += 1;
        }
        Some(run)
    }
}

impl std::ops::Index<usize> for AdSet {
    type Output = AccessDomain;
    fn index(&self, i: usize) -> &AccessDomain {
        match self.get(i) {
            Some(ad) => ad,
            None => panic!("access domain {i} of {}", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a AdSet {
    type Item = &'a AccessDomain;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl From<Vec<AccessDomain>> for AdSet {
    fn from(v: Vec<AccessDomain>) -> Self {
        let mut s = Self::default();
        s.push(v.into());
        s
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An access domain for tests: `name` in zone `zone`, weighted over no pool, declared
    /// at `file`:`line`.
    pub(in crate::config::gslb) fn ad_at(
        name: &[u8],
        zone: usize,
        file: &Arc<str>,
        line: u32,
    ) -> AccessDomain {
        AccessDomain {
            name: name.to_vec().into(),
            zone,
            rtype: 1,
            ttl: 30,
            enabled: true,
            remarks: None,
            policy: crate::config::gslb::PoolPolicy::Weighted,
            pools: Box::new([]),
            lines: Vec::new().into(),
            fallback: crate::config::gslb::Fallback::All,
            at: crate::config::error::Origin {
                file: file.clone(),
                line,
            },
        }
    }

    fn ad(i: usize) -> AccessDomain {
        ad_at(&[i as u8], i, &"t".into(), i as u32)
    }

    /// Indexing and iterating over segments of every size (empty ones left out) agree
    /// with one flat list.
    #[test]
    fn segments_index_like_a_flat_list() {
        let sizes = [3, 0, 1, 7, 0, 0, 2, 1];
        let mut set = AdSet::default();
        let mut n = 0;
        for &k in &sizes {
            set.push((n..n + k).map(ad).collect::<Vec<_>>().into());
            n += k;
        }
        assert_eq!(set.len(), n);
        assert_eq!(set.segments().len(), 5);
        let zones: Vec<usize> = set.iter().map(|a| a.zone).collect();
        assert_eq!(zones, (0..n).collect::<Vec<_>>());
        let back: Vec<(usize, usize)> = set.enumerate_rev().map(|(i, a)| (i, a.zone)).collect();
        assert_eq!(back, (0..n).rev().map(|i| (i, i)).collect::<Vec<_>>());
        for i in 0..n {
            assert_eq!(set[i].zone, i);
        }
        assert!(set.get(n).is_none());
        assert!(AdSet::default().get(0).is_none() && AdSet::default().is_empty());
    }
}
