//! Turning one read's answer into readings. Pure: the collector calls it with
//! what the device said (data, an exception code, or nothing).

use adit_config::{DataType, PointConfig};
use adit_core::{PointId, Quality, Reading, Reason, Timestamp};

use crate::codec::{decode_bit, decode_registers, decode_string};
use crate::convert::to_engineering;
use crate::plan::PlannedRead;

/// What a read returned.
#[derive(Debug, Clone, Copy)]
pub enum ReadData<'a> {
    Bits(&'a [bool]),
    Words(&'a [u16]),
}

/// Appends one reading per point of `read`, decoded from `data`.
pub fn decode_read(
    read: &PlannedRead,
    data: ReadData<'_>,
    points: &[PointConfig],
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
                .get(offset..offset + usize::from(point.width()))
                .map(|regs| adit_core::Value::Text(decode_string(regs, point.order).into())),
            ReadData::Words(words) if point.data_type == DataType::Bool => {
                words.get(offset).map(|w| {
                    adit_core::Value::Bool(decode_bit(*w, point.bit.unwrap_or(0), point.order))
                })
            }
            ReadData::Words(words) => words
                .get(offset..offset + usize::from(point.width()))
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
    use adit_config::{Table, WordOrder};
    use adit_core::Value;

    fn point(
        table: Table,
        address: u16,
        data_type: DataType,
        order: WordOrder,
        bit: Option<u8>,
        scale: f64,
    ) -> PointConfig {
        PointConfig {
            id: format!("p{address}"),
            table,
            address,
            data_type,
            order,
            bit,
            scale,
            offset: 0.0,
            unit: String::new(),
            range: None,
            interval: std::time::Duration::from_secs(1),
            deadband: None,
            deadband_heartbeat: std::time::Duration::from_secs(60),
            stale_after: std::time::Duration::from_secs(3),
            description: String::new(),
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
}
