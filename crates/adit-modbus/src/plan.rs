//! The request planner: a pure function from a device's points to the reads it
//! issues each poll.
//!
//! Invariants (property-tested):
//! - every point is covered by exactly one read, entirely inside it;
//! - no read is longer than the limit (`max_registers_per_read` for register
//!   tables, 2000 bits for coil/discrete tables, the protocol maximum);
//! - reads only bridge holes of at most `max_gap` unused addresses, so a device
//!   that refuses reads of unmapped registers is not asked for them when
//!   `max_gap = 0`;
//! - no read touches an address in a forbidden range (`no_read_ranges`, which
//!   apply to every table).

use adit_core::modbus::Table;

/// Protocol maximum for one read of coils or discrete inputs.
pub const MAX_BITS_PER_READ: u16 = 2000;

/// What the planner needs to know about one point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointSpan {
    pub table: Table,
    pub address: u16,
    /// Registers (or bits) occupied, ≥ 1.
    pub width: u16,
}

impl PointSpan {
    fn end(self) -> u32 {
        u32::from(self.address) + u32::from(self.width)
    }
}

/// One read request, and which points it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRead {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indexes into the planner's input, each with its offset inside the read.
    pub points: Vec<(usize, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "point {index} is {width} registers wide, more than the device's limit of {limit} per read"
    )]
    WiderThanLimit {
        index: usize,
        width: u16,
        limit: u16,
    },
    #[error("point {index} runs past address 65535")]
    PastEnd { index: usize },
    #[error("point {index} lies in a no-read range")]
    Forbidden { index: usize },
    #[error("not a Modbus device (its settings or a point address belong to another protocol)")]
    NotModbus,
}

/// Whether `[from, to)` touches a forbidden (inclusive) range.
fn touches_forbidden(from: u32, to: u32, forbidden: &[(u16, u16)]) -> bool {
    forbidden
        .iter()
        .any(|&(lo, hi)| from <= u32::from(hi) && u32::from(lo) < to)
}

/// Plans the reads for one device's points.
pub fn plan_reads(
    points: &[PointSpan],
    max_registers_per_read: u16,
    max_gap: u16,
    forbidden: &[(u16, u16)],
) -> Result<Vec<PlannedRead>, PlanError> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].width));

    let mut reads: Vec<PlannedRead> = Vec::new();
    // Current read: (table, start, end exclusive) and its points.
    let mut current: Option<(Table, u32, u32, Vec<usize>)> = None;
    for i in order {
        let p = points[i];
        let limit = if p.table.is_bit_table() {
            MAX_BITS_PER_READ
        } else {
            max_registers_per_read.max(1)
        };
        if p.width > limit {
            return Err(PlanError::WiderThanLimit {
                index: i,
                width: p.width,
                limit,
            });
        }
        if p.end() > 65536 {
            return Err(PlanError::PastEnd { index: i });
        }
        if touches_forbidden(u32::from(p.address), p.end(), forbidden) {
            return Err(PlanError::Forbidden { index: i });
        }
        let joins = current.as_ref().is_some_and(|(table, start, end, _)| {
            *table == p.table
                && u32::from(p.address) <= *end + u32::from(max_gap)
                && p.end().max(*end) - *start <= u32::from(limit)
                && !touches_forbidden(*end, u32::from(p.address), forbidden)
        });
        if joins {
            if let Some((_, _, end, members)) = current.as_mut() {
                *end = (*end).max(p.end());
                members.push(i);
            }
        } else {
            if let Some(done) = current.take() {
                reads.push(finish(points, done));
            }
            current = Some((p.table, u32::from(p.address), p.end(), vec![i]));
        }
    }
    if let Some(done) = current.take() {
        reads.push(finish(points, done));
    }
    Ok(reads)
}

fn finish(
    points: &[PointSpan],
    (table, start, end, members): (Table, u32, u32, Vec<usize>),
) -> PlannedRead {
    PlannedRead {
        table,
        start: start as u16,
        count: (end - start) as u16,
        points: members
            .into_iter()
            .map(|i| (i, (u32::from(points[i].address) - start) as u16))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg(address: u16, width: u16) -> PointSpan {
        PointSpan {
            table: Table::HoldingRegister,
            address,
            width,
        }
    }

    #[test]
    fn contiguous_points_coalesce_into_one_read() {
        let plan = plan_reads(&[reg(0, 2), reg(2, 2), reg(4, 1)], 125, 0, &[]).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].start, plan[0].count), (0, 5));
        assert_eq!(plan[0].points, vec![(0, 0), (1, 2), (2, 4)]);
    }

    #[test]
    fn gaps_are_bridged_only_up_to_max_gap() {
        let pts = [reg(0, 1), reg(5, 1)];
        assert_eq!(plan_reads(&pts, 125, 3, &[]).unwrap().len(), 2);
        assert_eq!(plan_reads(&pts, 125, 4, &[]).unwrap().len(), 1);
    }

    #[test]
    fn tables_are_never_mixed() {
        let pts = [
            reg(0, 1),
            PointSpan {
                table: Table::InputRegister,
                address: 1,
                width: 1,
            },
        ];
        assert_eq!(plan_reads(&pts, 125, 10, &[]).unwrap().len(), 2);
    }

    #[test]
    fn a_device_limited_to_32_registers_gets_reads_of_at_most_32() {
        let pts: Vec<_> = (0..100).map(|i| reg(i * 2, 2)).collect();
        let plan = plan_reads(&pts, 32, 0, &[]).unwrap();
        assert!(plan.iter().all(|r| r.count <= 32));
        assert_eq!(plan.len(), 200usize.div_ceil(32));
    }

    #[test]
    fn a_gap_is_not_bridged_across_a_forbidden_range() {
        let pts = [reg(0, 1), reg(5, 1)];
        assert_eq!(plan_reads(&pts, 125, 10, &[]).unwrap().len(), 1);
        assert_eq!(plan_reads(&pts, 125, 10, &[(3, 3)]).unwrap().len(), 2);
        assert_eq!(plan_reads(&pts, 125, 10, &[(1, 1)]).unwrap().len(), 2);
        assert_eq!(
            plan_reads(&[reg(2, 2)], 125, 0, &[(3, 9)]),
            Err(PlanError::Forbidden { index: 0 })
        );
    }

    #[test]
    fn a_point_wider_than_the_limit_is_an_error() {
        assert_eq!(
            plan_reads(&[reg(0, 4)], 2, 0, &[]),
            Err(PlanError::WiderThanLimit {
                index: 0,
                width: 4,
                limit: 2
            })
        );
    }

    fn any_point() -> impl Strategy<Value = PointSpan> {
        (0usize..4, 0u16..400, prop::sample::select(vec![1u16, 2, 4])).prop_map(
            |(t, address, width)| {
                let table = [
                    Table::Coil,
                    Table::DiscreteInput,
                    Table::InputRegister,
                    Table::HoldingRegister,
                ][t];
                PointSpan {
                    table,
                    address,
                    width: if table.is_bit_table() { 1 } else { width },
                }
            },
        )
    }

    proptest! {
        #[test]
        fn every_point_is_covered_exactly_once_within_limits(
            points in prop::collection::vec(any_point(), 0..80),
            limit in 4u16..=125,
            max_gap in 0u16..20,
            forbidden in prop::collection::vec((0u16..420, 0u16..6), 0..4),
        ) {
            let forbidden: Vec<(u16, u16)> = forbidden.into_iter().map(|(lo, len)| (lo, lo + len)).collect();
            let points: Vec<PointSpan> = points
                .into_iter()
                .filter(|p| !touches_forbidden(u32::from(p.address), p.end(), &forbidden))
                .collect();
            let plan = plan_reads(&points, limit, max_gap, &forbidden).unwrap();
            let mut seen = vec![0usize; points.len()];
            for read in &plan {
                let max = if read.table.is_bit_table() { MAX_BITS_PER_READ } else { limit };
                prop_assert!(read.count >= 1 && read.count <= max);
                let read_end = u32::from(read.start) + u32::from(read.count);
                prop_assert!(!touches_forbidden(u32::from(read.start), read_end, &forbidden), "read {read:?} touches {forbidden:?}");
                for &(i, offset) in &read.points {
                    seen[i] += 1;
                    let p = points[i];
                    prop_assert_eq!(p.table, read.table);
                    prop_assert_eq!(u32::from(read.start) + u32::from(offset), u32::from(p.address));
                    prop_assert!(u32::from(offset) + u32::from(p.width) <= u32::from(read.count));
                }
                // No hole inside a read is wider than max_gap.
                let mut covered: Vec<(u16, u16)> = read.points.iter().map(|&(i, o)| (o, o + points[i].width)).collect();
                covered.sort_unstable();
                let mut reach = 0u16;
                for (from, to) in covered {
                    prop_assert!(from <= reach + max_gap, "hole of {} > {}", from - reach, max_gap);
                    reach = reach.max(to);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
