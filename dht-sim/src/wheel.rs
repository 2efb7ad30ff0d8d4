//! The simulator's event queue: a timing wheel of one-millisecond slots for the near future (where
//! nearly every message delivery and lookup timeout falls), and a heap for anything farther out.
//!
//! Pops come out in the order a `BinaryHeap<Reverse<(at, seq, item)>>` would give: by time, then by the
//! sequence number given at scheduling. A heap of a million entries costs a cache miss per level on every
//! push and pop; the wheel costs one append and one pop on a small, hot slot.

use dht_core::Instant;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Milliseconds the wheel covers (a power of two).
const SLOTS: u64 = 1 << 12;

/// Items of type `T` due at millisecond instants.
pub(crate) struct Wheel<T> {
    /// Slot `t % SLOTS` holds the items due at `t`, for `t` in `[cursor, cursor + SLOTS)`, by sequence.
    slots: Vec<VecDeque<(u64, T)>>,
    /// Slots that received items from `far` and must be sorted by sequence before they are drained.
    unsorted: Vec<bool>,
    /// Items in `slots`.
    near: usize,
    /// Items due at or after `cursor + SLOTS`.
    far: BinaryHeap<Reverse<(Instant, u64, Item<T>)>>,
    /// No item is due before it.
    cursor: u64,
}

/// Wraps an item so the heap orders by time and sequence only.
struct Item<T>(T);

impl<T> PartialEq for Item<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Item<T> {}
impl<T> PartialOrd for Item<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Item<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> Wheel<T> {
    pub(crate) fn new() -> Self {
        Wheel {
            slots: (0..SLOTS).map(|_| VecDeque::new()).collect(),
            unsorted: vec![false; SLOTS as usize],
            near: 0,
            far: BinaryHeap::new(),
            cursor: 0,
        }
    }

    fn slot(t: u64) -> usize {
        (t % SLOTS) as usize
    }

    /// Schedules `item` at `at` with tie-breaker `seq` (increasing from call to call). An `at` before the
    /// cursor is treated as the cursor (the simulator never schedules into the past).
    pub(crate) fn push(&mut self, at: Instant, seq: u64, item: T) {
        let t = at.as_millis().max(self.cursor);
        if t < self.cursor + SLOTS {
            self.slots[Self::slot(t)].push_back((seq, item));
            self.near += 1;
        } else {
            self.far.push(Reverse((Instant::from_millis(t), seq, Item(item))));
        }
    }

    /// When the next item is due.
    pub(crate) fn peek(&self) -> Option<Instant> {
        if self.near > 0 {
            (self.cursor..self.cursor + SLOTS)
                .find(|&t| !self.slots[Self::slot(t)].is_empty())
                .map(Instant::from_millis)
        } else {
            self.far.peek().map(|Reverse((at, _, _))| *at)
        }
    }

    /// Takes the next item due.
    pub(crate) fn pop(&mut self) -> Option<(Instant, T)> {
        loop {
            if self.near == 0 {
                let Reverse((at, _, _)) = self.far.peek()?;
                let at = at.as_millis();
                self.advance(at);
            }
            let s = Self::slot(self.cursor);
            if !self.slots[s].is_empty() {
                if std::mem::take(&mut self.unsorted[s]) {
                    self.slots[s].make_contiguous().sort_unstable_by_key(|(seq, _)| *seq);
                }
                let (_, item) = self.slots[s].pop_front().expect("the slot is not empty");
                self.near -= 1;
                return Some((Instant::from_millis(self.cursor), item));
            }
            // Jump to the next occupied slot (there is one: `near` > 0).
            let next = (self.cursor + 1..self.cursor + SLOTS).find(|&t| !self.slots[Self::slot(t)].is_empty());
            self.advance(next.expect("an item lies within the wheel"));
        }
    }

    /// Moves the cursor to `t` (nothing may be due before it) and brings the items that now fall within
    /// the wheel in from the heap.
    pub(crate) fn advance(&mut self, t: u64) {
        if t <= self.cursor {
            return;
        }
        debug_assert!(
            self.near == 0 || (self.cursor..t.min(self.cursor + SLOTS)).all(|u| self.slots[Self::slot(u)].is_empty()),
            "items would be skipped"
        );
        self.cursor = t;
        while let Some(Reverse((at, _, _))) = self.far.peek() {
            let at = at.as_millis();
            if at >= self.cursor + SLOTS {
                break;
            }
            let Some(Reverse((_, seq, Item(item)))) = self.far.pop() else { break };
            let s = Self::slot(at);
            self.slots[s].push_back((seq, item));
            self.unsorted[s] = true;
            self.near += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    /// Random pushes (near, far, at the cursor) interleaved with pops and advances come out exactly as
    /// from a binary heap ordered by (time, sequence).
    #[test]
    fn pops_in_heap_order() {
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut wheel = Wheel::new();
            let mut heap = BinaryHeap::new();
            let (mut now, mut seq) = (0u64, 0u64);
            for _ in 0..5_000 {
                match rng.next_u64() % 10 {
                    0..=4 => {
                        let delay = match rng.next_u64() % 4 {
                            0 => 0,
                            1 => rng.next_u64() % 100,
                            2 => rng.next_u64() % (2 * SLOTS),
                            _ => rng.next_u64() % (20 * SLOTS),
                        };
                        seq += 1;
                        wheel.push(Instant::from_millis(now + delay), seq, seq);
                        heap.push(Reverse((now + delay, seq)));
                    }
                    5 if rng.next_u64() % 8 == 0 => {
                        // The simulator's run_until: everything up to t is handled, then the clock is t.
                        let t = now + rng.next_u64() % 300;
                        while heap.peek().is_some_and(|Reverse((at, _))| *at <= t) {
                            let Reverse((at, s)) = heap.pop().unwrap();
                            assert_eq!(wheel.pop(), Some((Instant::from_millis(at), s)));
                        }
                        now = t;
                        wheel.advance(t);
                    }
                    _ => {
                        let want = heap.pop().map(|Reverse((at, s))| (Instant::from_millis(at), s));
                        assert_eq!(wheel.peek(), want.map(|(at, _)| at));
                        let got = wheel.pop();
                        assert_eq!(got, want);
                        if let Some((at, _)) = got {
                            now = at.as_millis();
                        }
                    }
                }
            }
            while let Some(Reverse((at, s))) = heap.pop() {
                assert_eq!(wheel.pop(), Some((Instant::from_millis(at), s)));
            }
            assert_eq!(wheel.pop(), None);
        }
    }
}
