//! Turning one read's answer into readings. Pure: the collector calls it with
//! what the device said (data, an exception code, or nothing).

use adit_config::PointConfig;
use adit_core::modbus::{DataType, DeviceClock, WordOrder};
use adit_core::{PointId, Quality, Reading, Reason, Timestamp};

use crate::codec::{decode_bit, decode_registers, decode_string, RawValue};
use crate::plan::PlannedRead;
use adit_core::engineering::to_engineering;

/// What a read returned.
#[derive(Debug, Clone, Copy)]
pub enum ReadData<'a> {
    Bits(&'a [bool]),
    Words(&'a [u16]),
}

/// What decoding needs to know about a point: the codec's own type, built
/// once from the config by the collector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodePoint {
    pub data_type: DataType,
    pub order: WordOrder,
    /// For `bool` from a register: the bit.
    pub bit: Option<u8>,
    /// Registers (or bits) the point occupies.
    pub width: u16,
    pub scale: f64,
    pub offset: f64,
}

impl DecodePoint {
    /// The decoding of a Modbus point; `None` for a point of another protocol.
    pub fn of(point: &PointConfig) -> Option<Self> {
        let m = point.modbus()?;
        Some(Self {
            data_type: m.data_type,
            order: m.order,
            bit: m.bit,
            width: m.width(),
            scale: point.scale,
            offset: point.offset,
        })
    }
}

/// Appends one reading per point of `read`, decoded from `data`.
pub fn decode_read(
    read: &PlannedRead,
    data: ReadData<'_>,
    points: &[DecodePoint],
    ids: &[PointId],
    ts: Timestamp,
    out: &mut Vec<Reading>,
) {
    for &(index, offset) in &read.points {
        let (Some(point), Some(&id)) = (points.get(index), ids.get(index)) else {
            continue;
        };
        let offset = usize::from(offset);
        let value = match data {
            ReadData::Bits(bits) => bits.get(offset).map(|b| adit_core::Value::Bool(*b)),
            ReadData::Words(words) if matches!(point.data_type, DataType::String(_)) => words
                .get(offset..offset + usize::from(point.width))
                .map(|regs| adit_core::Value::Text(decode_string(regs, point.order).into())),
            ReadData::Words(words) if point.data_type == DataType::Bool => {
                words.get(offset).map(|w| {
                    adit_core::Value::Bool(decode_bit(*w, point.bit.unwrap_or(0), point.order))
                })
            }
            ReadData::Words(words) => words
                .get(offset..offset + usize::from(point.width))
                .and_then(|regs| decode_registers(regs, point.data_type, point.order).ok())
                .map(|raw| to_engineering(raw, point.scale, point.offset)),
        };
        out.push(match value {
            Some(value) => Reading {
                point: id,
                value: Some(value),
                quality: Quality::Good,
                source_ts: ts,
                received_ts: ts,
            },
            // The device answered with fewer registers than asked for.
            None => Reading::without_value(id, Quality::Bad(Reason::Conversion), ts),
        });
    }
}

/// The device's clock from its registers, as a timestamp. `None` when the
/// answer is too short or the count does not fit a timestamp; a clock that
/// reads 1970 is returned as such, for normalization to flag.
pub fn decode_clock(words: &[u16], clock: &DeviceClock) -> Option<Timestamp> {
    let width = usize::from(clock.data_type.register_count());
    let raw = decode_registers(words.get(..width)?, clock.data_type, clock.order).ok()?;
    let count = match raw {
        RawValue::Unsigned(u) => i64::try_from(u).ok()?,
        RawValue::Signed(i) => i,
        RawValue::Float(_) | RawValue::Bool(_) => return None,
    };
    count.checked_mul(clock.micros_per_count).map(Timestamp)
}

/// Gives every reading of `readings` the device's clock as source time.
pub fn stamp_with_device_clock(readings: &mut [Reading], device_ts: Timestamp) {
    for r in readings {
        r.source_ts = device_ts;
    }
}

/// Appends a valueless reading of `quality` for every point of `read`.
pub fn mark_read(
    read: &PlannedRead,
    ids: &[PointId],
    quality: Quality,
    ts: Timestamp,
    out: &mut Vec<Reading>,
) {
    for &(index, _) in &read.points {
        if let Some(&id) = ids.get(index) {
            out.push(Reading::without_value(id, quality, ts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::modbus::{Table, WordOrder};
    use adit_core::Value;

    fn point(
        table: Table,
        _address: u16,
        data_type: DataType,
        order: WordOrder,
        bit: Option<u8>,
        scale: f64,
    ) -> DecodePoint {
        DecodePoint {
            data_type,
            order,
            bit,
            width: if table.is_bit_table() {
                1
            } else {
                data_type.register_count()
            },
            scale,
            offset: 0.0,
        }
    }

    #[test]
    fn one_answer_decodes_into_every_point_of_the_read() {
        let points = vec![
            point(
                Table::HoldingRegister,
                0,
                DataType::F32,
                WordOrder::Cdab,
                None,
                1.0,
            ),
            point(
                Table::HoldingRegister,
                2,
                DataType::I16,
                WordOrder::Abcd,
                None,
                0.1,
            ),
            point(
                Table::HoldingRegister,
                3,
                DataType::Bool,
                WordOrder::Abcd,
                Some(2),
                1.0,
            ),
        ];
        let read = PlannedRead {
            table: Table::HoldingRegister,
            start: 0,
            count: 4,
            points: vec![(0, 0), (1, 2), (2, 3)],
        };
        let ids = [PointId(10), PointId(11), PointId(12)];
        let mut out = Vec::new();
        decode_read(
            &read,
            ReadData::Words(&[0x0000, 0x4120, 0xFF9C, 0b100]),
            &points,
            &ids,
            Timestamp(5),
            &mut out,
        );
        let values: Vec<_> = out
            .iter()
            .map(|r| (r.point, r.value.clone(), r.quality))
            .collect();
        assert_eq!(
            values,
            vec![
                (PointId(10), Some(Value::F64(10.0)), Quality::Good),
                (PointId(11), Some(Value::F64(-10.0)), Quality::Good),
                (PointId(12), Some(Value::Bool(true)), Quality::Good),
            ]
        );
    }

    #[test]
    fn a_short_answer_is_a_conversion_failure_not_a_panic() {
        let points = vec![point(
            Table::HoldingRegister,
            0,
            DataType::U32,
            WordOrder::Abcd,
            None,
            1.0,
        )];
        let read = PlannedRead {
            table: Table::HoldingRegister,
            start: 0,
            count: 2,
            points: vec![(0, 0)],
        };
        let mut out = Vec::new();
        decode_read(
            &read,
            ReadData::Words(&[1]),
            &points,
            &[PointId(0)],
            Timestamp(5),
            &mut out,
        );
        assert_eq!(out[0].quality, Quality::Bad(Reason::Conversion));
        assert_eq!(out[0].value, None);
    }

    #[test]
    fn device_clocks_decode_in_their_type_order_and_unit() {
        let clock = |data_type, order, micros_per_count| DeviceClock {
            table: Table::HoldingRegister,
            address: 900,
            data_type,
            order,
            micros_per_count,
        };
        let secs = clock(DataType::U32, WordOrder::Abcd, 1_000_000);
        let ms = clock(DataType::U64, WordOrder::Abcd, 1_000);
        let swapped = clock(DataType::U32, WordOrder::Cdab, 1_000_000);
        let signed = clock(DataType::I32, WordOrder::Abcd, 1_000_000);
        // 2026-11-29T00:00:00Z = 1_795_910_400 s = 0x6B0B_6B00
        let table: [(&[u16], &DeviceClock, Option<i64>); 7] = [
            (&[0x6B0B, 0x6B00], &secs, Some(1_795_910_400_000_000)),
            (&[0x6B00, 0x6B0B], &swapped, Some(1_795_910_400_000_000)),
            // RTC reset: seconds since power-up, i.e. 1970
            (&[0x0000, 0x0E10], &secs, Some(3_600_000_000)),
            (
                &[0x0000, 0x01A2, 0x2499, 0xF800],
                &ms,
                Some(1_795_910_400_000 * 1_000),
            ),
            (&[0xFFFF, 0xFFFF], &signed, Some(-1_000_000)),
            // too short
            (&[0x6B0B], &secs, None),
            // u64 milliseconds that overflow microseconds
            (&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], &ms, None),
        ];
        for (words, clock, expected) in table {
            assert_eq!(
                decode_clock(words, clock),
                expected.map(Timestamp),
                "{words:04X?} as {:?} {:?}",
                clock.data_type,
                clock.order
            );
        }
    }
}
