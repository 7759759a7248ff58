//! The name index: lowercased wire name -> node, for every name of every zone, in shards
//! that copies of the index share (see [`NameIndex`]).

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

/// The hasher of the name index: fast, seeded per process.
pub type NameHasher = foldhash::fast::RandomState;

/// Names per shard the index aims at (a copy-on-write unit: a name added to a copy of
/// the index copies one shard of about this many names).
const SHARD_NAMES: usize = 1024;
/// Most shards: 2^12 (4 million names at the aim; beyond, shards grow).
const MAX_BITS: u32 = 12;

/// Name -> node ([`super::Names::index`]), cut into shards by hash, each behind an `Arc`:
/// a copy shares every shard, and a name added to or taken out of it copies the one
/// shard it falls in (a million names are a thousand shards of a thousand).
#[derive(Debug, Clone)]
pub struct NameIndex {
    shards: Box<[Arc<Shard>]>,
    /// `shards.len() - 1` (a power of two, less one).
    mask: usize,
    len: usize,
    hasher: NameHasher,
}

/// One shard: a hash table of (offset of the name in `arena`, node) over its names,
/// which sit one after another in one arena (a length octet, then the name): a million
/// names are a thousand allocations rather than a million, and a lookup compares the
/// question name with the arena's bytes at one offset.
#[derive(Debug, Clone, Default)]
struct Shard {
    table: HashTable<(u32, u32)>,
    arena: Vec<u8>,
}

impl Default for NameIndex {
    fn default() -> Self {
        Self {
            shards: Box::new([Arc::default()]),
            mask: 0,
            len: 0,
            hasher: NameHasher::default(),
        }
    }
}

impl NameIndex {
    /// An index with room for `names` names of `octets` octets in all.
    pub fn with_capacity(names: usize, octets: usize) -> Self {
        let mut ix = Self::default();
        ix.reserve(names, octets);
        ix
    }

    /// Room for `names` more names of `octets` octets in all (the index is cut into
    /// more shards first when that many would make its shards large). Every shard is
    /// written: for an index being built, not a copy that shares its shards.
    pub fn reserve(&mut self, names: usize, octets: usize) {
        if names == 0 {
            return;
        }
        let want = (self.len + names).div_ceil(SHARD_NAMES).next_power_of_two();
        let bits = want.trailing_zeros().min(MAX_BITS);
        if bits > self.mask.count_ones() {
            self.reshard(bits);
        }
        let n = self.shards.len();
        // Hashes spread names evenly; a little slack keeps most shards from growing.
        let (per, per_octets) = (
            names / n + names / n / 8 + 1,
            octets / n + octets / n / 8 + 1,
        );
        for s in self.shards.iter_mut() {
            let s = Arc::make_mut(s);
            let arena = &s.arena;
            let hasher = &self.hasher;
            s.table
                .reserve(per, |&(off, _)| hasher.hash_one(key(arena, off)));
            s.arena.reserve(per_octets + per);
        }
    }

    /// Every name moved into `2^bits` shards.
    fn reshard(&mut self, bits: u32) {
        let mut out = Self {
            shards: (0..1usize << bits).map(|_| Arc::default()).collect(),
            mask: (1 << bits) - 1,
            len: 0,
            hasher: self.hasher.clone(),
        };
        for (name, node) in self.iter() {
            out.insert(name, node);
        }
        *self = out;
    }

    /// The shard of a name whose hash is `h` (bits apart from those the shard's table
    /// takes its bucket and tag from).
    #[inline]
    fn shard_of(&self, h: u64) -> usize {
        (h >> 32) as usize & self.mask
    }

    /// The node of `name`.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(name);
        let s = &self.shards[self.shard_of(h)];
        s.table
            .find(h, |&(off, _)| key(&s.arena, off) == name)
            .map(|&(_, node)| node)
    }

    /// Sets the node of `name` (a name longer than 255 octets, which no wire name is, is
    /// left out).
    pub fn insert(&mut self, name: &[u8], node: u32) {
        let Ok(len) = u8::try_from(name.len()) else {
            return;
        };
        let h = self.hasher.hash_one(name);
        let i = self.shard_of(h);
        let hasher = &self.hasher;
        let s = Arc::make_mut(&mut self.shards[i]);
        let arena = &s.arena;
        match s.table.entry(
            h,
            |&(off, _)| key(arena, off) == name,
            |&(off, _)| hasher.hash_one(key(arena, off)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = node,
            hashbrown::hash_table::Entry::Vacant(e) => {
                // A compile that panics is refused (contained): 4 GiB of names is no model.
                let off = u32::try_from(s.arena.len()).expect("name arena under 4 GiB");
                e.insert((off, node));
                s.arena.push(len);
                s.arena.extend_from_slice(name);
                self.len += 1;
            }
        }
    }

    /// Takes `name` out, returning its node (its octets stay in the shard's arena,
    /// unused).
    pub fn remove(&mut self, name: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(name);
        let i = self.shard_of(h);
        self.get(name)?;
        let s = Arc::make_mut(&mut self.shards[i]);
        let arena = &s.arena;
        let e = s
            .table
            .find_entry(h, |&(off, _)| key(arena, off) == name)
            .ok()?;
        self.len -= 1;
        Some(e.remove().0 .1)
    }

    /// Names indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No name is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (name, node), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.shards.iter().flat_map(|s| {
            s.table
                .iter()
                .map(move |&(off, node)| (key(&s.arena, off), node))
        })
    }

    /// Whether shard `i` is shared with `other` (tests).
    #[cfg(test)]
    fn shares_shard(&self, other: &Self, i: usize) -> bool {
        Arc::ptr_eq(&self.shards[i], &other.shards[i])
    }
}

/// The name at `off` in `arena`.
#[inline]
fn key(arena: &[u8], off: u32) -> &[u8] {
    let o = off as usize;
    let len = arena[o] as usize;
    &arena[o + 1..o + 1 + len]
}

#[cfg(test)]
mod tests {
    use super::NameIndex;

    #[test]
    fn finds_what_was_put_in() {
        let mut ix = NameIndex::with_capacity(2, 16);
        let names: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| format!("\u{3}n{:02}\u{4}test\0", i % 100).into_bytes())
            .collect();
        for (i, n) in names.iter().enumerate().take(100) {
            ix.insert(n, i as u32);
        }
        assert_eq!(ix.len(), 100);
        for (i, n) in names.iter().enumerate().take(100) {
            assert_eq!(ix.get(n), Some(i as u32));
        }
        // Again: the node is replaced, not the name added twice.
        ix.insert(&names[7], 700);
        assert_eq!((ix.len(), ix.get(&names[7])), (100, Some(700)));
        assert_eq!(ix.get(b"\x03n07\x04tesu\0"), None);
        assert_eq!(ix.get(b"\x03n07\x04test"), None);
        assert_eq!(ix.get(b""), None);
        assert_eq!(ix.iter().count(), 100);
        ix.insert(&[1u8; 256], 1);
        assert_eq!(ix.len(), 100, "a name over 255 octets is left out");
        assert_eq!(ix.remove(&names[7]), Some(700));
        assert_eq!(
            (ix.len(), ix.get(&names[7]), ix.remove(&names[7])),
            (99, None, None)
        );
        assert_eq!(ix.get(&names[8]), Some(8));
        assert_eq!(ix.shards.len(), 1, "a hundred names are one shard");
    }

    /// Many names are cut into shards; a copy shares them all, and a name added to or
    /// taken out of it copies its own shard alone.
    #[test]
    fn copies_share_the_shards_they_do_not_write() {
        let name = |i: u32| format!("\u{5}n{i:04}\u{4}test\0").into_bytes();
        let mut ix = NameIndex::default();
        ix.reserve(3000, 3000 * 12);
        for i in 0..5000 {
            ix.insert(&name(i), i);
            if i == 2999 {
                ix.reserve(2000, 2000 * 12);
            }
        }
        let shards = ix.shards.len();
        assert!(shards >= 4, "{shards} shards");
        assert!((0..5000).all(|i| ix.get(&name(i)) == Some(i)));
        let mut c = ix.clone();
        assert!((0..shards).all(|i| c.shares_shard(&ix, i)));
        c.insert(b"\x03new\x04test\0", 9);
        assert_eq!(c.remove(&name(7)), Some(7));
        let copied = (0..shards).filter(|&i| !c.shares_shard(&ix, i)).count();
        assert!((1..=2).contains(&copied), "{copied} shards copied");
        assert_eq!((c.len(), ix.len()), (5000, 5000));
        assert_eq!(
            (c.get(b"\x03new\x04test\0"), ix.get(b"\x03new\x04test\0")),
            (Some(9), None)
        );
        assert_eq!((c.get(&name(7)), ix.get(&name(7))), (None, Some(7)));
        assert!((8..5000).all(|i| c.get(&name(i)) == Some(i)));
        assert_eq!(c.iter().count(), 5000);
    }
}
