//! The largest values of a changing set of contributions, kept in bounded memory.
//!
//! Aggregates are maintained by adding a session's contribution and later taking it away
//! again. Sums undo exactly; a maximum does not: when the session holding the maximum leaves,
//! the next largest is needed. [`TopK`] keeps the `K` largest contributions (value, row id)
//! and the number of contributions in all. Whoever is not listed is known to be no larger than
//! the smallest listed value, so the maximum stays exact as long as one entry is listed; only
//! when `K` listed contributions left and none came back in is it lost ([`TopK::lost`]), and the
//! owner recomputes the aggregate from scratch. Sessions grow by appends, so a session that
//! leaves usually comes straight back with a value at least as large.

/// How many contributions are listed.
const K: usize = 8;

/// A value with a total order (doubles by `total_cmp`).
pub trait Ordered: Copy + PartialEq {
    fn cmp_total(&self, other: &Self) -> std::cmp::Ordering;
}

impl Ordered for f64 {
    fn cmp_total(&self, other: &Self) -> std::cmp::Ordering {
        self.total_cmp(other)
    }
}

impl Ordered for i64 {
    fn cmp_total(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp(other)
    }
}

/// The `K` largest of a multiset of `(value, id)` contributions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopK<V: Ordered> {
    /// Largest first; ties by id, so the order never depends on arrival.
    listed: Vec<(V, u64)>,
    /// Contributions in the set, listed or not.
    count: i64,
}

impl<V: Ordered> Default for TopK<V> {
    fn default() -> Self {
        TopK { listed: Vec::new(), count: 0 }
    }
}

impl<V: Ordered> TopK<V> {
    fn position(&self, v: &V, id: u64) -> Result<usize, usize> {
        self.listed.binary_search_by(|(x, i)| v.cmp_total(x).then(i.cmp(&id)))
    }

    /// Adds one contribution.
    pub fn add(&mut self, v: V, id: u64) {
        self.count += 1;
        let all_listed = self.listed.len() as i64 == self.count - 1;
        let fits = match self.listed.last() {
            None => all_listed,
            Some((last, last_id)) => all_listed || v.cmp_total(last).then(last_id.cmp(&id)).is_gt(),
        };
        if !fits {
            return;
        }
        let at = self.position(&v, id).unwrap_or_else(|e| e);
        self.listed.insert(at, (v, id));
        self.listed.truncate(K);
    }

    /// Removes one contribution added before with the same value and id.
    pub fn remove(&mut self, v: V, id: u64) {
        self.count -= 1;
        if let Ok(at) = self.position(&v, id) {
            self.listed.remove(at);
        }
        if self.count <= 0 {
            self.listed.clear();
            self.count = 0;
        }
    }

    /// Adds (`sign` 1) or removes (-1) a contribution.
    pub fn apply(&mut self, v: V, id: u64, sign: i64) {
        if sign >= 0 { self.add(v, id) } else { self.remove(v, id) }
    }

    /// The largest value, unless it was lost or the set is empty.
    pub fn max(&self) -> Option<V> {
        self.listed.first().map(|(v, _)| *v)
    }

    /// Contributions remain but none is listed: the maximum is unknown until recomputed.
    pub fn lost(&self) -> bool {
        self.count > 0 && self.listed.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference: the multiset itself.
    fn max_of(set: &[(i64, u64)]) -> Option<i64> {
        set.iter().map(|(v, _)| *v).max()
    }

    #[test]
    fn keeps_the_maximum_through_adds_and_removes() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..200 {
            let mut top = TopK::<i64>::default();
            let mut set: Vec<(i64, u64)> = Vec::new();
            let mut lost_seen = false;
            for step in 0..300u64 {
                if set.is_empty() || next(3) > 0 {
                    let v = next(50) as i64;
                    top.add(v, step);
                    set.push((v, step));
                } else {
                    let (v, id) = set.swap_remove(next(set.len() as u64) as usize);
                    top.remove(v, id);
                }
                if top.lost() {
                    lost_seen = true;
                    // The owner recomputes: rebuild from the set.
                    top = TopK::default();
                    for (v, id) in &set {
                        top.add(*v, *id);
                    }
                }
                assert_eq!(top.max(), max_of(&set), "step {step}");
            }
            let _ = lost_seen;
        }
    }

    #[test]
    fn the_same_set_gives_the_same_list_in_any_order() {
        let items: Vec<(f64, u64)> = (0..20u32).map(|i| (f64::from(i % 7), u64::from(i))).collect();
        let mut a = TopK::<f64>::default();
        items.iter().for_each(|(v, i)| a.add(*v, *i));
        let mut b = TopK::<f64>::default();
        items.iter().rev().for_each(|(v, i)| b.add(*v, *i));
        assert_eq!(a.listed, b.listed);
        assert_eq!(a.max(), Some(6.0));
    }
}
