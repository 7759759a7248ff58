//! The name index: lowercased wire name -> node, for every name of every zone. The names
//! sit one after another in one arena (a length octet, then the name), and a hash table
//! holds (offset, node) pairs over it: a million names are one allocation rather than a
//! million, and a lookup compares the question name with the arena's bytes at one offset,
//! as a map of boxed names compares with the box it points to.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// The hasher of the name index: fast, seeded per process.
pub type NameHasher = foldhash::fast::RandomState;

/// Name -> node ([`super::Names::index`]).
#[derive(Debug, Default, Clone)]
pub struct NameIndex {
    /// (offset of the name in `arena`, node).
    table: HashTable<(u32, u32)>,
    /// Each name: its length (one octet: wire names are at most 255), then its octets.
    arena: Vec<u8>,
    hasher: NameHasher,
}

impl NameIndex {
    /// An index with room for `names` names of `octets` octets in all.
    pub fn with_capacity(names: usize, octets: usize) -> Self {
        Self {
            table: HashTable::with_capacity(names),
            arena: Vec::with_capacity(octets + names),
            hasher: NameHasher::default(),
        }
    }

    /// Room for `names` more names of `octets` octets in all.
    pub fn reserve(&mut self, names: usize, octets: usize) {
        let hasher = &self.hasher;
        let arena = &self.arena;
        self.table
            .reserve(names, |&(off, _)| hasher.hash_one(key(arena, off)));
        self.arena.reserve(octets + names);
    }

    /// A copy with room for `names` more names of `octets` octets in all (a clone has
    /// none: the first name added would copy the arena again).
    pub fn clone_with_room(&self, names: usize, octets: usize) -> Self {
        let mut arena = Vec::with_capacity(self.arena.len() + octets + names);
        arena.extend_from_slice(&self.arena);
        let mut out = Self {
            table: self.table.clone(),
            arena,
            hasher: self.hasher.clone(),
        };
        let (hasher, arena) = (&out.hasher, &out.arena);
        out.table
            .reserve(names, |&(off, _)| hasher.hash_one(key(arena, off)));
        out
    }

    /// The node of `name`.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(name);
        self.table
            .find(h, |&(off, _)| key(&self.arena, off) == name)
            .map(|&(_, node)| node)
    }

    /// Sets the node of `name` (a name longer than 255 octets, which no wire name is, is
    /// left out).
    pub fn insert(&mut self, name: &[u8], node: u32) {
        let Ok(len) = u8::try_from(name.len()) else {
            return;
        };
        let h = self.hasher.hash_one(name);
        let (hasher, arena) = (&self.hasher, &self.arena);
        match self.table.entry(
            h,
            |&(off, _)| key(arena, off) == name,
            |&(off, _)| hasher.hash_one(key(arena, off)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = node,
            hashbrown::hash_table::Entry::Vacant(e) => {
                // A compile that panics is refused (contained): 4 GiB of names is no model.
                let off = u32::try_from(self.arena.len()).expect("name arena under 4 GiB");
                e.insert((off, node));
                self.arena.push(len);
                self.arena.extend_from_slice(name);
            }
        }
    }

    /// Takes `name` out, returning its node (its octets stay in the arena, unused).
    pub fn remove(&mut self, name: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(name);
        let arena = &self.arena;
        let e = self
            .table
            .find_entry(h, |&(off, _)| key(arena, off) == name)
            .ok()?;
        Some(e.remove().0 .1)
    }

    /// Names indexed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// No name is indexed.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every (name, node), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.table
            .iter()
            .map(|&(off, node)| (key(&self.arena, off), node))
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
        // A copy with room finds the same names, and takes more without touching them.
        let mut c = ix.clone_with_room(2, 20);
        c.insert(&names[7], 7);
        c.insert(b"\x03new\x04test\0", 150);
        assert_eq!((c.len(), ix.len()), (101, 99));
        assert!((0..100).all(|i| c.get(&names[i]) == Some(i as u32)));
        let new = b"\x03new\x04test\0";
        assert_eq!((c.get(new), ix.get(new)), (Some(150), None));
    }
}
