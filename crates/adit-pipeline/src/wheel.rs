//! A timing wheel of point ids: 4,096 one-millisecond slots ahead of a
//! cursor, and a heap for ticks beyond them. Inserting is a push onto a
//! slot's vector (no sift through a heap of every point), taking the due
//! slots walks a bitmap of occupied ones.
//!
//! Invariants:
//! - every id in a slot has a tick in `[cursor, cursor + SLOTS)`, at index
//!   `tick % SLOTS`; a tick before the cursor is filed at the cursor (due at
//!   once), one beyond the window goes to `far` until the cursor nears it;
//! - a slot's bit in `occupied` is set exactly when the slot holds ids;
//! - `far` holds only ticks at or beyond `cursor + SLOTS` (the cursor
//!   brings them in as it moves), so the earliest slot is earlier than all
//!   of `far`;
//! - the cursor only moves forward, over empty slots or onto the slot it
//!   hands out, so no id is ever behind it;
//! - an empty slot keeps at most [`KEEP_CAPACITY`] of capacity: the slots'
//!   vectors hold about twice the ids held, plus 4 MiB at most.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use adit_core::PointId;

/// Nanoseconds per tick (slot).
pub(crate) const TICK_NS: u64 = 1_000_000;
/// Slots in the wheel (a multiple of 64: one bitmap word per 64 slots).
const SLOTS: u64 = 4096;
/// Capacity (ids) an empty slot may keep; a larger vector is released
/// when its slot is taken, so memory follows what the wheel holds now, not
/// the largest group each slot ever held.
pub(crate) const KEEP_CAPACITY: usize = 256;

#[derive(Debug)]
pub(crate) struct Wheel {
    slots: Vec<Vec<PointId>>,
    occupied: Vec<u64>,
    /// `(tick, id)` beyond the window, earliest first.
    far: BinaryHeap<Reverse<(u64, PointId)>>,
    cursor: u64,
}

impl Wheel {
    pub fn new(start_tick: u64) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; (SLOTS / 64) as usize],
            far: BinaryHeap::new(),
            cursor: start_tick,
        }
    }

    /// Ids held (in slots and beyond them).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum::<usize>() + self.far.len()
    }

    /// Gives back what `far` holds beyond its ids (after a first filling:
    /// its vector doubled on the way).
    pub fn shrink(&mut self) {
        self.far.shrink_to_fit();
    }

    /// Files `id` under `tick` (at the cursor if `tick` is before it).
    pub fn insert(&mut self, tick: u64, id: PointId) {
        self.file(tick.max(self.cursor), id);
    }

    fn file(&mut self, tick: u64, id: PointId) {
        if tick >= self.cursor + SLOTS {
            self.far.push(Reverse((tick, id)));
            return;
        }
        let at = (tick % SLOTS) as usize;
        if let Some(slot) = self.slots.get_mut(at) {
            slot.push(id);
        }
        if let Some(word) = self.occupied.get_mut(at / 64) {
            *word |= 1 << (at % 64);
        }
    }

    /// Moves the cursor to `tick` (never back) and the ids of `far` whose
    /// tick entered the window into slots, so that `far` holds only ticks
    /// beyond every slot's.
    fn advance(&mut self, tick: u64) {
        self.cursor = self.cursor.max(tick);
        while let Some(&Reverse((tick, id))) = self.far.peek() {
            if tick >= self.cursor + SLOTS {
                break;
            }
            self.far.pop();
            self.file(tick, id);
        }
    }

    /// The first occupied tick in `from..=to` (at most `SLOTS` apart).
    fn next_occupied(&self, from: u64, to: u64) -> Option<u64> {
        let mut tick = from;
        while tick <= to {
            let at = (tick % SLOTS) as usize;
            let bit = at % 64;
            let word = self.occupied.get(at / 64).copied().unwrap_or(0) >> bit;
            if word != 0 {
                let found = tick + u64::from(word.trailing_zeros());
                return (found <= to).then_some(found);
            }
            tick += 64 - bit as u64;
        }
        None
    }

    /// Takes the ids of the earliest occupied tick at or before `upto` into
    /// `into` (emptying its slot) and returns that tick; the cursor moves to
    /// it. `None`: nothing is due by `upto` (the cursor moves to `upto`).
    pub fn take_due(&mut self, upto: u64, into: &mut Vec<PointId>) -> Option<u64> {
        loop {
            let end = upto.min(self.cursor + SLOTS - 1);
            if let Some(tick) = self.next_occupied(self.cursor, end) {
                self.advance(tick);
                let at = (tick % SLOTS) as usize;
                if let Some(slot) = self.slots.get_mut(at) {
                    if into.is_empty() {
                        // The caller's empty vector takes the slot's place.
                        std::mem::swap(slot, into);
                    } else {
                        into.append(slot);
                    }
                    if slot.capacity() > KEEP_CAPACITY {
                        *slot = Vec::new();
                    }
                }
                if let Some(word) = self.occupied.get_mut(at / 64) {
                    *word &= !(1 << (at % 64));
                }
                return Some(tick);
            }
            if end >= upto {
                self.advance(upto);
                return None;
            }
            self.advance(end + 1);
        }
    }

    /// The earliest tick that holds ids, and the ids in its slot (empty for
    /// a tick beyond the window: its ids are not looked at there).
    pub fn earliest(&self) -> Option<(u64, &[PointId])> {
        match self.next_occupied(self.cursor, self.cursor + SLOTS - 1) {
            Some(tick) => {
                let ids = self.slots.get((tick % SLOTS) as usize)?;
                Some((tick, ids.as_slice()))
            }
            None => self.far.peek().map(|Reverse((tick, _))| (*tick, &[][..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_upto(w: &mut Wheel, upto: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        while let Some(tick) = w.take_due(upto, &mut ids) {
            out.extend(ids.drain(..).map(|id| (tick, id.0)));
        }
        out
    }

    #[test]
    fn a_taken_slot_keeps_no_large_vector() {
        let mut w = Wheel::new(0);
        let mut into = Vec::new();
        // A big group moves from slot to slot, as a poll's points do.
        for round in 0..100u64 {
            for id in 0..10_000 {
                w.insert(round + 1, PointId(id));
            }
            assert_eq!(w.take_due(round + 1, &mut into), Some(round + 1));
            assert_eq!(into.len(), 10_000);
            into.clear();
            if into.capacity() > KEEP_CAPACITY {
                into = Vec::new();
            }
        }
        let kept: usize = w.slots.iter().map(Vec::capacity).sum();
        assert!(kept <= KEEP_CAPACITY * SLOTS as usize, "{kept}");
        assert!(w.slots.iter().all(|s| s.capacity() <= KEEP_CAPACITY));
    }

    #[test]
    fn ids_come_out_by_tick_across_the_window_and_beyond_it() {
        let mut w = Wheel::new(1000);
        for (tick, id) in [
            (1005, 1),
            (1000 + SLOTS + 7, 2),
            (1003, 3),
            (999, 4),
            (1005, 5),
        ] {
            w.insert(tick, PointId(id));
        }
        assert_eq!(w.len(), 5);
        assert_eq!(w.earliest().map(|(t, ids)| (t, ids.len())), Some((1000, 1)));
        assert_eq!(
            drain_upto(&mut w, 1004),
            vec![(1000, 4), (1003, 3)],
            "a tick before the cursor is due at once"
        );
        assert_eq!(drain_upto(&mut w, 1005), vec![(1005, 1), (1005, 5)]);
        assert_eq!(
            w.earliest().map(|(t, _)| t),
            Some(1000 + SLOTS + 7),
            "from beyond the window"
        );
        assert!(drain_upto(&mut w, 1000 + SLOTS + 6).is_empty());
        assert_eq!(drain_upto(&mut w, 10 * SLOTS), vec![(1000 + SLOTS + 7, 2)]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.earliest(), None);
    }

    proptest::proptest! {
        /// Against a sorted list: any inserts (ticks up to three windows
        /// ahead, some behind the cursor) and takes come out in tick order,
        /// each id once, none before its tick.
        #[test]
        fn takes_match_a_sorted_model(
            ops in proptest::collection::vec((0u64..3 * SLOTS, 0u64..600, proptest::bool::ANY), 1..300)
        ) {
            let mut w = Wheel::new(0);
            let mut model: Vec<(u64, u32)> = Vec::new();
            let mut now = 0u64;
            for (n, (ahead, advance, take)) in ops.into_iter().enumerate() {
                // Some ticks land behind the cursor: due at once.
                let tick = (now + ahead).saturating_sub(300);
                w.insert(tick, PointId(n as u32));
                model.push((tick.max(w.cursor), n as u32));
                if take {
                    now += advance;
                    let mut got = drain_upto(&mut w, now);
                    got.sort_unstable();
                    let mut want: Vec<(u64, u32)> = model.iter().copied().filter(|(t, _)| *t <= now).collect();
                    want.sort_unstable();
                    model.retain(|(t, _)| *t > now);
                    proptest::prop_assert_eq!(got, want);
                    proptest::prop_assert_eq!(w.len(), model.len());
                    if let Some(min) = model.iter().map(|(t, _)| *t).min() {
                        proptest::prop_assert_eq!(w.earliest().map(|(t, _)| t), Some(min));
                    }
                }
            }
        }
    }
}
