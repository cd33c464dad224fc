//! The fact table: a fixed number of `key = value` pairs, some with an expiry time.
//!
//! Pure data: no I/O, no clock (times are passed in), no heap. Entries are kept sorted
//! by key so KEYS, STATUS and the beacon list them in a stable order.

use crate::limits::{KEY_MAX, MAX_FACTS, VALUE_MAX};
use heapless::Vec;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Fact {
    pub key: Vec<u8, KEY_MAX>,
    pub value: Vec<u8, VALUE_MAX>,
    pub expires: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Default)]
pub struct Facts {
    entries: Vec<Fact, MAX_FACTS>,
}

impl Facts {
    pub fn new() -> Self {
        Facts::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Fact> {
        self.entries.iter()
    }

    fn find(&self, key: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|f| f.key.as_slice().cmp(key))
    }

    pub fn get(&self, key: &[u8]) -> Option<&Fact> {
        self.find(key).ok().map(|i| &self.entries[i])
    }

    /// Inserts or replaces. The caller has validated key and value lengths; longer
    /// input is refused as `Full` rather than cut. A full table loses nothing.
    pub fn set(&mut self, key: &[u8], value: &[u8], expires: Option<Instant>) -> Result<(), Full> {
        let mut v = Vec::new();
        v.extend_from_slice(value).map_err(|_| Full)?;
        match self.find(key) {
            Ok(i) => {
                self.entries[i].value = v;
                self.entries[i].expires = expires;
                Ok(())
            }
            Err(i) => {
                let mut k = Vec::new();
                k.extend_from_slice(key).map_err(|_| Full)?;
                self.entries
                    .insert(
                        i,
                        Fact {
                            key: k,
                            value: v,
                            expires,
                        },
                    )
                    .map_err(|_| Full)
            }
        }
    }

    pub fn del(&mut self, key: &[u8]) -> bool {
        match self.find(key) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes every fact whose time has come; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|f| f.expires.is_none_or(|t| t > now));
        before - self.entries.len()
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.iter().filter_map(|f| f.expires).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn full_table_keeps_everything_and_replace_still_works() {
        let mut f = Facts::new();
        for i in 0..MAX_FACTS {
            let k = format!("k{i:02}");
            f.set(k.as_bytes(), b"v", None).unwrap();
        }
        assert_eq!(f.set(b"extra", b"v", None), Err(Full));
        assert_eq!(f.len(), MAX_FACTS);
        // Replacing an existing key needs no new slot.
        f.set(b"k05", b"new", None).unwrap();
        assert_eq!(f.get(b"k05").unwrap().value.as_slice(), b"new");
        let keys: std::vec::Vec<_> = f.iter().map(|x| x.key.clone()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn ttl_expiry() {
        let t0 = Instant::now();
        let mut f = Facts::new();
        f.set(b"a", b"1", Some(t0 + Duration::from_secs(2)))
            .unwrap();
        f.set(b"b", b"2", None).unwrap();
        assert_eq!(f.next_expiry(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(f.expire(t0 + Duration::from_secs(1)), 0);
        assert_eq!(f.expire(t0 + Duration::from_secs(2)), 1);
        assert!(f.get(b"a").is_none());
        assert_eq!(f.next_expiry(), None);
        // SET without ttl clears an earlier ttl.
        f.set(b"c", b"3", Some(t0)).unwrap();
        f.set(b"c", b"3", None).unwrap();
        assert_eq!(f.expire(t0 + Duration::from_secs(9)), 0);
    }
}
