//! Generational slab: O(1) insert, lookup and removal, ids never reused.

use crate::event::ConnId;

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn insert(&mut self, value: T) -> ConnId {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            let e = &mut self.entries[slot as usize];
            // Bump on reuse so ids of removed entries stay invalid.
            e.generation = e.generation.wrapping_add(1).max(1);
            e.value = Some(value);
            return ConnId::new(slot, e.generation);
        }
        let slot = u32::try_from(self.entries.len()).expect("fewer than 2^32 connections");
        self.entries.push(Entry {
            generation: 1,
            value: Some(value),
        });
        ConnId::new(slot, 1)
    }

    fn entry(&self, id: ConnId) -> Option<&Entry<T>> {
        self.entries
            .get(id.slot())
            .filter(|e| e.generation == id.generation())
    }

    pub fn get(&self, id: ConnId) -> Option<&T> {
        self.entry(id)?.value.as_ref()
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.entries
            .get_mut(id.slot())
            .filter(|e| e.generation == id.generation())?
            .value
            .as_mut()
    }

    /// Two distinct live entries at once.
    pub fn get2_mut(&mut self, a: ConnId, b: ConnId) -> Option<(&mut T, &mut T)> {
        let (sa, sb) = (a.slot(), b.slot());
        if sa == sb || self.entry(a)?.value.is_none() || self.entry(b)?.value.is_none() {
            return None;
        }
        let (lo, hi) = if sa < sb { (sa, sb) } else { (sb, sa) };
        let (left, right) = self.entries.split_at_mut(hi);
        let (x, y) = (left[lo].value.as_mut()?, right[0].value.as_mut()?);
        Some(if sa < sb { (x, y) } else { (y, x) })
    }

    /// The id currently living in `slot` (for poll tokens).
    pub fn id_at(&self, slot: usize) -> Option<ConnId> {
        let e = self.entries.get(slot)?;
        e.value.as_ref()?;
        Some(ConnId::new(slot as u32, e.generation))
    }

    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let e = self
            .entries
            .get_mut(id.slot())
            .filter(|e| e.generation == id.generation())?;
        let v = e.value.take()?;
        self.free.push(id.slot() as u32);
        self.len -= 1;
        Some(v)
    }

    pub fn ids(&self) -> Vec<ConnId> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| ConnId::new(i as u32, e.generation))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_ids_stay_invalid_after_slot_reuse() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!(s.remove(a), Some("a"));
        let c = s.insert("c");
        assert_eq!(c.slot(), a.slot());
        assert_ne!(c, a);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(c), Some(&"c"));
        let (x, y) = s.get2_mut(c, b).unwrap();
        assert_eq!((*x, *y), ("c", "b"));
        assert!(s.get2_mut(c, c).is_none());
        assert_eq!(s.len(), 2);
        assert_eq!(s.id_at(b.slot()), Some(b));
    }
}
