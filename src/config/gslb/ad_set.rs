//! The access domains of a model, in declaration order (the main file's, then each included
//! file's), held as one segment per file behind an `Arc`: a reload that finds an included
//! file unchanged shares that file's access domains with the configuration it replaces
//! instead of reading, validating and holding them twice (`include.rs`).

use std::sync::Arc;

use super::AccessDomain;

/// Access domains by index, in segments.
#[derive(Debug, Clone, Default)]
pub struct AdSet {
    segs: Vec<Arc<[AccessDomain]>>,
    /// Index one past the last access domain of each segment.
    ends: Vec<usize>,
}

/// The iterator over an [`AdSet`].
pub type Iter<'a> = std::iter::FlatMap<
    std::slice::Iter<'a, Arc<[AccessDomain]>>,
    &'a [AccessDomain],
    fn(&'a Arc<[AccessDomain]>) -> &'a [AccessDomain],
>;

impl AdSet {
    /// Appends a segment (an empty one is left out).
    pub fn push(&mut self, seg: Arc<[AccessDomain]>) {
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
    pub fn segments(&self) -> &[Arc<[AccessDomain]>] {
        &self.segs
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
mod tests {
    use super::*;

    fn ad(i: usize) -> AccessDomain {
        AccessDomain {
            name: vec![i as u8].into(),
            zone: i,
            rtype: 1,
            ttl: 30,
            enabled: true,
            remarks: None,
            policy: crate::config::gslb::PoolPolicy::Weighted,
            pools: Box::new([]),
            lines: Vec::new().into(),
            fallback: crate::config::gslb::Fallback::All,
            at: crate::config::error::Origin {
                file: "t".into(),
                line: i as u32,
            },
        }
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
