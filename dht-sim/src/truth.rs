//! Ground truth: the ids of the live nodes, and the true k closest to any point.

use dht_core::NodeId;
use std::collections::BTreeSet;

/// The set of live node ids, ordered as 256-bit integers.
#[derive(Debug, Default, Clone)]
pub struct AliveSet {
    ids: BTreeSet<NodeId>,
}

fn prefix_block(target: &NodeId, bits: u32) -> (NodeId, NodeId) {
    let mut lo = *target.as_bytes();
    let mut hi = *target.as_bytes();
    for i in 0..256u32 {
        if i >= bits {
            let (byte, bit) = ((i / 8) as usize, 7 - (i % 8));
            lo[byte] &= !(1 << bit);
            hi[byte] |= 1 << bit;
        }
    }
    (NodeId::from_bytes(lo), NodeId::from_bytes(hi))
}

impl AliveSet {
    /// Adds a live id.
    pub fn insert(&mut self, id: NodeId) {
        self.ids.insert(id);
    }

    /// Removes a departed id.
    pub fn remove(&mut self, id: &NodeId) {
        self.ids.remove(id);
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.ids.contains(id)
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn count_in_block(&self, target: &NodeId, bits: u32, cap: usize) -> usize {
        let (lo, hi) = prefix_block(target, bits);
        self.ids.range(lo..=hi).take(cap).count()
    }

    /// The `k` live ids closest to `target` by XOR, nearest first.
    ///
    /// All ids sharing a longer prefix with the target are closer than any sharing a shorter one, so the
    /// answer lies in the longest-prefix block holding at least `k` ids: found by binary search on the
    /// prefix length, then sorted by distance.
    pub fn closest(&self, target: &NodeId, k: usize) -> Vec<NodeId> {
        let (mut lo, mut hi) = (0u32, 256u32);
        // Invariant: the block of prefix length `lo` holds >= k ids (or lo == 0).
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.count_in_block(target, mid, k) >= k {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let (a, b) = prefix_block(target, lo);
        let mut block: Vec<NodeId> = self.ids.range(a..=b).copied().collect();
        block.sort_by_key(|id| id.distance(target));
        block.truncate(k);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_matches_brute_force() {
        let mut set = AliveSet::default();
        let mut all = Vec::new();
        for i in 0..3000u32 {
            let id = NodeId::from_public_key(&[
                (i % 251) as u8,
                (i / 251) as u8,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                13,
                14,
                15,
                16,
                17,
                18,
                19,
                20,
                21,
                22,
                23,
                24,
                25,
                26,
                27,
                28,
                29,
                30,
                31,
                32,
            ]);
            set.insert(id);
            all.push(id);
        }
        for t in 0..50u8 {
            let target = NodeId::from_public_key(&[t; 32]);
            let mut expect = all.clone();
            expect.sort_by_key(|id| id.distance(&target));
            expect.truncate(20);
            assert_eq!(set.closest(&target, 20), expect);
        }
        let mut small = AliveSet::default();
        small.insert(all[0]);
        assert_eq!(small.closest(&all[1], 20), vec![all[0]]);
    }
}
