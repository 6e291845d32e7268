//! The handoff: the last records appended, kept in memory as the readings
//! they were encoded from, so that a reader that keeps up takes them from
//! here instead of reading, checking and decoding the bytes it was just
//! given (about a tenth of adit's CPU at 20k readings/s).
//!
//! Invariants:
//! - an entry is pushed under the state lock by the append that wrote its
//!   record, after the record is in the file (and synced, under `always`):
//!   a reader is never handed a record the file does not hold;
//! - entries are consecutive sequence numbers: a record appended without
//!   its readings (alerts, a re-sent payload, a batch filtered on the way)
//!   is an entry without readings, which readers take from the file at the
//!   position the entry names;
//! - an entry leaves when every cursor acknowledged it, when its segment is
//!   dropped (`when_full = drop_oldest`), or when what the entries hold
//!   exceeds the bound (oldest first; [`MAX_HELD_BYTES`] unless the spool
//!   was given another): a reader that falls behind reads the file, as
//!   before, so the handoff changes cost, never content;
//! - the bound counts bytes: each entry's own size, and for kept readings
//!   their vector's capacity plus the record's encoded length (which holds
//!   every text value's bytes), so long texts cannot escape it.

use std::collections::VecDeque;
use std::sync::Arc;

use adit_core::Reading;

/// Bytes the handoff holds at most by default (see the invariants): some
/// 50,000 numeric readings. With sinks that keep up it holds only what
/// they have not acknowledged yet, a batch or two.
pub(crate) const MAX_HELD_BYTES: usize = 4 << 20;

/// What an entry costs apart from its readings.
const ENTRY_BYTES: usize = 64;

/// One appended record: where it is in its segment, and its readings when
/// the append kept them.
#[derive(Clone)]
pub(crate) struct RecentRecord {
    pub seq: u64,
    /// `first_seq` of the segment holding the record.
    pub segment: u64,
    /// Offset of the record in its segment, and of the one after it.
    pub start: u64,
    pub end: u64,
    pub readings: Option<Arc<Vec<Reading>>>,
}

impl RecentRecord {
    fn cost(&self) -> usize {
        let encoded = usize::try_from(self.end - self.start).unwrap_or(usize::MAX);
        ENTRY_BYTES
            + self.readings.as_ref().map_or(0, |r| {
                (r.capacity() * std::mem::size_of::<Reading>()).saturating_add(encoded)
            })
    }
}

pub(crate) struct Recent {
    entries: VecDeque<RecentRecord>,
    /// Sum of the entries' costs.
    held: usize,
    max_held: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            held: 0,
            max_held: MAX_HELD_BYTES,
        }
    }
}

impl Recent {
    /// Sets the bound (bytes) and applies it.
    pub fn limit(&mut self, max_held: usize) {
        self.max_held = max_held;
        self.evict_over_bound();
    }

    fn evict_over_bound(&mut self) {
        while self.held > self.max_held {
            if self.pop_front().is_none() {
                break;
            }
        }
    }

    /// Adds the record just appended. A gap in the sequence (cannot happen
    /// while appends push every record; kept as a guard) empties the rest.
    pub fn push(&mut self, record: RecentRecord) {
        if self
            .entries
            .back()
            .is_some_and(|last| last.seq + 1 != record.seq)
        {
            self.entries.clear();
            self.held = 0;
        }
        self.held = self.held.saturating_add(record.cost());
        self.entries.push_back(record);
        self.evict_over_bound();
    }

    /// Forgets the records up to and including `seq`.
    pub fn forget_through(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) -> Option<RecentRecord> {
        let e = self.entries.pop_front()?;
        self.held = self.held.saturating_sub(e.cost());
        Some(e)
    }

    /// The record `seq`, if it is still held.
    pub fn get(&self, seq: u64) -> Option<&RecentRecord> {
        let first = self.entries.front()?.seq;
        let at = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(at)
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, Quality, Timestamp, Value};

    fn record(seq: u64, n: usize) -> RecentRecord {
        let r = Reading {
            point: PointId(0),
            value: Some(Value::F64(1.0)),
            quality: Quality::Good,
            source_ts: Timestamp(0),
            received_ts: Timestamp(0),
        };
        RecentRecord {
            seq,
            segment: 1,
            start: seq * 10,
            end: seq * 10 + 10,
            readings: (n > 0).then(|| {
                let mut v = Vec::with_capacity(n);
                v.resize(n, r.clone());
                Arc::new(v)
            }),
        }
    }

    #[test]
    fn records_are_found_by_sequence_and_forgotten_in_order() {
        let mut recent = Recent::default();
        for seq in 5..10 {
            recent.push(record(seq, usize::from(seq != 7)));
        }
        assert!(recent.get(4).is_none());
        assert_eq!(recent.get(5).map(|e| e.seq), Some(5));
        assert!(recent.get(7).is_some_and(|e| e.readings.is_none()));
        assert!(recent.get(10).is_none());
        recent.forget_through(7);
        assert!(recent.get(7).is_none());
        assert_eq!(recent.get(8).map(|e| e.start), Some(80));
        let one = record(8, 1).cost();
        assert_eq!(recent.held(), 2 * one);
    }

    #[test]
    fn what_is_held_stays_under_the_bound_oldest_leaving_first() {
        let mut recent = Recent::default();
        let per = record(1, 1000).cost();
        recent.limit(4 * per);
        for seq in 1..=10 {
            recent.push(record(seq, 1000));
            assert!(recent.held() <= 4 * per);
        }
        assert!(recent.get(6).is_none());
        assert!(recent.get(7).is_some());
        assert!(recent.get(10).is_some());
        recent.limit(per);
        assert!(recent.get(9).is_none());
        assert!(recent.get(10).is_some());
    }

    #[test]
    fn text_counts_by_its_encoded_bytes() {
        let mut big = record(1, 1);
        big.end = big.start + (1 << 20);
        assert!(big.cost() > 1 << 20);
        assert_eq!(record(1, 0).cost(), ENTRY_BYTES);
    }

    #[test]
    fn a_gap_in_the_sequence_empties_what_came_before() {
        let mut recent = Recent::default();
        recent.push(record(1, 3));
        recent.push(record(3, 3));
        assert!(recent.get(1).is_none());
        assert!(recent.get(3).is_some());
        assert_eq!(recent.held(), record(3, 3).cost());
    }
}
