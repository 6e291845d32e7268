//! An OPC UA `DataValue` → the value, quality and time of a reading, pure.
//!
//! - every scalar built-in type that is a number, a boolean or text becomes
//!   a value (integers stay integers unless scaled; `DateTime` becomes
//!   milliseconds since 1970 as an integer); anything else (`ByteString`,
//!   Guid, `NodeId`, structures) is `Bad(Conversion)` without a value, never
//!   dropped;
//! - an array needs the point's `index` (an element out of bounds, or an
//!   array without an index, is `Bad(Conversion)`);
//! - a good status without a value is `Bad(Conversion)` (a reading without
//!   a value is never good);
//! - the time is the source timestamp, else the server's, else the receive
//!   time, as configured; a null `DateTime` (1601) counts as absent.

use adit_config::TimestampSource;
use adit_core::engineering::{to_engineering, RawValue};
use adit_core::{Quality, Reason, Timestamp, Value};
use opcua::types::{DataValue, DateTime, StatusCode, Variant};

use crate::status::quality_of;

/// 100 ns ticks from 1601-01-01 to 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// How a point turns values into engineering units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaling {
    pub index: Option<u32>,
    pub scale: f64,
    pub offset: f64,
}

impl Scaling {
    pub const NONE: Scaling = Scaling {
        index: None,
        scale: 1.0,
        offset: 0.0,
    };
}

/// What one data value says.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    pub value: Option<Value>,
    pub quality: Quality,
    pub ts: Timestamp,
}

pub fn convert(
    dv: &DataValue,
    scaling: Scaling,
    timestamps: TimestampSource,
    received: Timestamp,
) -> Converted {
    let status = dv.status.unwrap_or(StatusCode::Good);
    let mut quality = quality_of(status);
    let value = match dv.value.as_ref() {
        None | Some(Variant::Empty) => None,
        Some(v) => match element(v, scaling.index) {
            Some(scalar) => to_value(scalar, scaling),
            None => None,
        },
    };
    let unusable = dv
        .value
        .as_ref()
        .is_some_and(|v| !matches!(v, Variant::Empty))
        && value.is_none();
    if (unusable || value.is_none()) && quality == Quality::Good {
        quality = Quality::Bad(Reason::Conversion);
    } else if unusable {
        // A non-good status already says why; keep it.
    }
    let ts = match timestamps {
        TimestampSource::Source => to_timestamp(dv.source_timestamp.as_ref())
            .or_else(|| to_timestamp(dv.server_timestamp.as_ref())),
        TimestampSource::Server => to_timestamp(dv.server_timestamp.as_ref()),
        TimestampSource::Receive => None,
    }
    .unwrap_or(received);
    Converted { value, quality, ts }
}

/// The scalar a point reads from `v`: `v` itself, or element `index` of an
/// array. `None` when the shapes disagree.
fn element(v: &Variant, index: Option<u32>) -> Option<&Variant> {
    match (v, index) {
        (Variant::Array(a), Some(i)) => a.values.get(i as usize),
        (Variant::Array(_), None) | (_, Some(_)) => None,
        (scalar, None) => Some(scalar),
    }
}

fn to_value(v: &Variant, s: Scaling) -> Option<Value> {
    let raw = match v {
        Variant::Boolean(b) => RawValue::Bool(*b),
        Variant::SByte(x) => RawValue::Signed(i64::from(*x)),
        Variant::Int16(x) => RawValue::Signed(i64::from(*x)),
        Variant::Int32(x) => RawValue::Signed(i64::from(*x)),
        Variant::Int64(x) => RawValue::Signed(*x),
        Variant::Byte(x) => RawValue::Unsigned(u64::from(*x)),
        Variant::UInt16(x) => RawValue::Unsigned(u64::from(*x)),
        Variant::UInt32(x) => RawValue::Unsigned(u64::from(*x)),
        Variant::UInt64(x) => RawValue::Unsigned(*x),
        Variant::Float(x) => RawValue::Float(f64::from(*x)),
        Variant::Double(x) => RawValue::Float(*x),
        Variant::String(text) => return text.value().as_deref().map(|t| Value::Text(t.into())),
        Variant::LocalizedText(text) => {
            return text.text.value().as_deref().map(|t| Value::Text(t.into()))
        }
        Variant::DateTime(dt) => {
            return to_timestamp(Some(dt)).map(|t| Value::I64(t.as_micros().div_euclid(1000)))
        }
        Variant::StatusCode(code) => RawValue::Unsigned(u64::from(code.bits())),
        _ => return None,
    };
    Some(to_engineering(raw, s.scale, s.offset))
}

/// An OPC UA time as adit's; `None` for the null time.
pub fn to_timestamp(dt: Option<&DateTime>) -> Option<Timestamp> {
    let ticks = dt?.ticks();
    if ticks <= 0 {
        return None;
    }
    Some(Timestamp((ticks - UNIX_EPOCH_TICKS).div_euclid(10)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{Array, LocalizedText, VariantScalarTypeId};

    fn dv(value: Variant, status: u32) -> DataValue {
        DataValue {
            value: Some(value),
            status: Some(StatusCode::from(status)),
            source_timestamp: None,
            source_picoseconds: None,
            server_timestamp: None,
            server_picoseconds: None,
        }
    }

    const RX: Timestamp = Timestamp(1_700_000_000_000_000);

    fn value_of(v: Variant) -> (Option<Value>, Quality) {
        let c = convert(&dv(v, 0), Scaling::NONE, TimestampSource::Source, RX);
        (c.value, c.quality)
    }

    #[test]
    fn every_scalar_built_in_type_becomes_a_value() {
        let g = Quality::Good;
        for (variant, want) in [
            (Variant::Boolean(true), Some(Value::Bool(true))),
            (Variant::SByte(-5), Some(Value::I64(-5))),
            (Variant::Byte(250), Some(Value::I64(250))),
            (Variant::Int16(-32768), Some(Value::I64(-32768))),
            (Variant::UInt16(65535), Some(Value::I64(65535))),
            (
                Variant::Int32(i32::MIN),
                Some(Value::I64(i64::from(i32::MIN))),
            ),
            (
                Variant::UInt32(u32::MAX),
                Some(Value::I64(i64::from(u32::MAX))),
            ),
            (Variant::Int64(i64::MIN), Some(Value::I64(i64::MIN))),
            (Variant::UInt64(7), Some(Value::I64(7))),
            (Variant::UInt64(u64::MAX), Some(Value::F64(u64::MAX as f64))),
            (Variant::Float(1.5), Some(Value::F64(1.5))),
            (Variant::Double(-0.25), Some(Value::F64(-0.25))),
            (
                Variant::String("heavy".into()),
                Some(Value::Text("heavy".into())),
            ),
            (
                Variant::LocalizedText(Box::new(LocalizedText::new("en", "open"))),
                Some(Value::Text("open".into())),
            ),
        ] {
            assert_eq!(value_of(variant.clone()), (want, g), "{variant:?}");
        }
    }

    #[test]
    fn a_date_time_is_milliseconds_since_1970() {
        let t = DateTime::ymd_hms(2026, 12, 4, 18, 0, 0);
        let (v, q) = value_of(Variant::DateTime(Box::new(t)));
        assert_eq!(q, Quality::Good);
        assert_eq!(v, Some(Value::I64(1_796_407_200_000)));
    }

    #[test]
    fn unusable_types_and_shapes_are_bad_conversion_not_dropped() {
        let array = Variant::Array(Box::new(
            Array::new(
                VariantScalarTypeId::Double,
                vec![Variant::Double(1.0), Variant::Double(2.0)],
            )
            .unwrap(),
        ));
        for v in [
            Variant::ByteString(vec![1u8, 2].into()),
            Variant::Guid(Box::default()),
            array.clone(),
        ] {
            assert_eq!(
                value_of(v.clone()),
                (None, Quality::Bad(Reason::Conversion)),
                "{v:?}"
            );
        }
        // An explicit index flattens an array; out of bounds is bad.
        let pick = |i| {
            convert(
                &dv(array.clone(), 0),
                Scaling {
                    index: Some(i),
                    ..Scaling::NONE
                },
                TimestampSource::Source,
                RX,
            )
        };
        assert_eq!(pick(1).value, Some(Value::F64(2.0)));
        assert_eq!(pick(1).quality, Quality::Good);
        assert_eq!(pick(2).quality, Quality::Bad(Reason::Conversion));
        // A good status without a value is not good.
        let empty = DataValue {
            value: None,
            ..dv(Variant::Empty, 0)
        };
        let c = convert(&empty, Scaling::NONE, TimestampSource::Source, RX);
        assert_eq!(
            (c.value, c.quality),
            (None, Quality::Bad(Reason::Conversion))
        );
    }

    #[test]
    fn a_bad_status_keeps_its_name_and_whatever_value_came_with_it() {
        let c = convert(
            &dv(Variant::Double(12.0), 0x808C_0000),
            Scaling::NONE,
            TimestampSource::Source,
            RX,
        );
        assert_eq!(c.value, Some(Value::F64(12.0)));
        assert_eq!(
            c.quality,
            Quality::Bad(Reason::status(0x808C_0000, "BadSensorFailure"))
        );
    }

    #[test]
    fn scale_and_offset_apply_to_numbers() {
        let c = convert(
            &dv(Variant::Int16(123), 0),
            Scaling {
                index: None,
                scale: 0.1,
                offset: 1.0,
            },
            TimestampSource::Source,
            RX,
        );
        assert_eq!(c.value, Some(Value::F64(13.3)));
    }

    #[test]
    fn timestamps_fall_back_from_source_to_server_to_receive() {
        let src = DateTime::ymd_hms(2026, 1, 1, 0, 0, 0);
        let srv = DateTime::ymd_hms(2026, 1, 1, 0, 0, 1);
        let mut d = dv(Variant::Double(1.0), 0);
        d.source_timestamp = Some(src);
        d.server_timestamp = Some(srv);
        let at = |d: &DataValue, t| convert(d, Scaling::NONE, t, RX).ts;
        let src_ts = to_timestamp(Some(&src)).unwrap();
        let srv_ts = to_timestamp(Some(&srv)).unwrap();
        assert_eq!(src_ts.as_micros(), 1_767_225_600_000_000);
        assert_eq!(at(&d, TimestampSource::Source), src_ts);
        assert_eq!(at(&d, TimestampSource::Server), srv_ts);
        assert_eq!(at(&d, TimestampSource::Receive), RX);
        d.source_timestamp = Some(DateTime::null());
        assert_eq!(at(&d, TimestampSource::Source), srv_ts);
        d.server_timestamp = None;
        assert_eq!(at(&d, TimestampSource::Source), RX);
        assert_eq!(at(&d, TimestampSource::Server), RX);
    }
}
