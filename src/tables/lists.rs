//! An index of the lists stored once in an arena (candidate pool lists): each list's
//! place, found by its content, without a copy of that content. The compiler keeps one
//! from reload to reload; a copy of every list as a hash key doubled what the lists
//! cost.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// The hasher: fast, seeded per process (a clone of the index copies its seed).
type Hasher = foldhash::fast::RandomState;

/// Where each stored list starts and how long it is, by content.
#[derive(Clone, Default)]
pub struct ListIndex {
    table: HashTable<(u32, u32)>,
    hasher: Hasher,
}

impl std::fmt::Debug for ListIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListIndex({} lists)", self.table.len())
    }
}

/// The list entry `(start, len)` names in `arena` (`None` past its end).
fn at<T>(arena: &[T], (s, n): (u32, u32)) -> Option<&[T]> {
    arena.get(s as usize..s as usize + n as usize)
}

impl ListIndex {
    fn hash<T: Hash>(&self, list: &[T]) -> u64 {
        self.hasher.hash_one(list)
    }

    /// Where `list` (of hash `h`) is stored in `arena`, if it is.
    fn find<T: Eq>(&self, h: u64, list: &[T], arena: &[T]) -> Option<u32> {
        let found = self.table.find(h, |&e| at(arena, e) == Some(list));
        found.map(|&(s, _)| s)
    }

    /// Where `list` is stored in `arena`, if it is (the compiler interns; tests look).
    #[cfg(test)]
    pub fn get<T: Hash + Eq>(&self, list: &[T], arena: &[T]) -> Option<u32> {
        self.find(self.hash(list), list, arena)
    }

    /// Records that the list at `start` of `arena` (`len` entries) is there, in place of
    /// where a list alike was said to be.
    pub fn insert<T: Hash + Eq>(&mut self, arena: &[T], start: u32, len: u32) {
        let list = &arena[start as usize..(start + len) as usize];
        let h = self.hash(list);
        self.put(h, arena, (start, len));
    }

    /// [`Self::insert`] with the list's hash known.
    fn put<T: Hash + Eq>(&mut self, h: u64, arena: &[T], entry: (u32, u32)) {
        let hasher = &self.hasher;
        // An entry past the arena's end (none should be) hashes as nothing, never panics.
        let rehash = |&e: &(u32, u32)| hasher.hash_one(at(arena, e).unwrap_or_default());
        let list = at(arena, entry);
        match self.table.entry(h, |&e| at(arena, e) == list, rehash) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = entry,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(entry);
            }
        }
    }

    /// The start of `list` in `arena`, appending it the first time it is seen.
    pub fn intern<T: Hash + Eq + Copy>(&mut self, list: &[T], arena: &mut Vec<T>) -> u32 {
        let h = self.hash(list);
        if let Some(start) = self.find(h, list, arena) {
            return start;
        }
        let start = arena.len() as u32;
        arena.extend_from_slice(list);
        self.put(h, arena, (start, list.len() as u32));
        start
    }

    /// Lists indexed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// None indexed.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Each list's (start, length).
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.table.iter().copied()
    }

    /// Keeps the lists `f` gives a start (their new one: the content there must be the
    /// same, so their hash is), drops the others.
    pub fn retain(&mut self, mut f: impl FnMut(u32, u32) -> Option<u32>) {
        self.table.retain(|e| match f(e.0, e.1) {
            Some(s) => {
                e.0 = s;
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_found_by_content_and_stored_once() {
        let (mut ix, mut arena) = (ListIndex::default(), Vec::new());
        let a = ix.intern(&[1u32, 2, 3], &mut arena);
        let b = ix.intern(&[2u32, 3], &mut arena);
        assert_eq!((a, b), (0, 3));
        assert_eq!(ix.intern(&[1u32, 2, 3], &mut arena), 0);
        assert_eq!(ix.get(&[2u32], &arena), None, "a part of a list is no list");
        assert_eq!(arena, [1, 2, 3, 2, 3]);
        assert_eq!(ix.intern(&[] as &[u32], &mut arena), 5);
        assert_eq!(ix.len(), 3);
        // [2, 3] copied to the front: the index follows it.
        arena.copy_within(3..5, 0);
        ix.retain(|s, n| match (s, n) {
            (3, 2) => Some(0),
            (0, 3) => None,
            _ => Some(s.min(2)),
        });
        arena.truncate(2);
        assert_eq!(ix.get(&[2u32, 3], &arena), Some(0));
        assert_eq!(ix.get(&[1u32, 2, 3], &arena), None);
        assert_eq!(ix.intern(&[1u32, 2, 3], &mut arena), 2);
    }
}
