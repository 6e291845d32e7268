//! Raw decoded numbers → engineering values (scale and offset), for every
//! protocol (Modbus registers, OPC UA variants). Pure.
//!
//! Unscaled integers stay integers (`Value::I64`) so counters keep every digit;
//! anything scaled becomes `Value::F64`. A decimal scale such as 0.1 or 0.01 is
//! applied as a division by 10 or 100, so 123 × 0.1 stores as 12.3, not
//! 12.300000000000001. NaN and infinity pass through: normalization turns them
//! into `Bad(Conversion)`.

use crate::Value;

/// A decoded number before scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawValue {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// Applies `value = raw × scale + offset`.
pub fn to_engineering(raw: RawValue, scale: f64, offset: f64) -> Value {
    let unscaled = scale == 1.0 && offset == 0.0;
    let x = match raw {
        RawValue::Bool(b) => return Value::Bool(b),
        RawValue::Signed(i) if unscaled => return Value::I64(i),
        RawValue::Unsigned(u) if unscaled => {
            if let Ok(i) = i64::try_from(u) {
                return Value::I64(i);
            }
            u as f64
        }
        RawValue::Signed(i) => i as f64,
        RawValue::Unsigned(u) => u as f64,
        RawValue::Float(f) => f,
    };
    Value::F64(apply_scale(x, scale) + offset)
}

fn apply_scale(x: f64, scale: f64) -> f64 {
    if scale > 0.0 && scale < 1.0 {
        let divisor = (1.0 / scale).round();
        if (divisor * scale - 1.0).abs() < 1e-12 {
            return x / divisor;
        }
    }
    x * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_raw_values_scales_and_results() {
        let cases = [
            (RawValue::Unsigned(123), 0.1, 0.0, Value::F64(12.3)),
            (RawValue::Signed(-250), 0.01, 0.0, Value::F64(-2.5)),
            (RawValue::Unsigned(1500), 0.00001, 0.0, Value::F64(0.015)),
            (RawValue::Signed(-32768), 1.0, 0.0, Value::I64(-32768)),
            (
                RawValue::Unsigned(u64::MAX),
                1.0,
                0.0,
                Value::F64(u64::MAX as f64),
            ),
            (RawValue::Unsigned(400), 0.05, -5.0, Value::F64(15.0)),
            (RawValue::Unsigned(10), 2.0, 1.0, Value::F64(21.0)),
            (RawValue::Float(238.5), 1.0, 0.0, Value::F64(238.5)),
            (RawValue::Bool(true), 10.0, 3.0, Value::Bool(true)),
        ];
        for (raw, scale, offset, expected) in cases {
            assert_eq!(
                to_engineering(raw, scale, offset),
                expected,
                "{raw:?} × {scale} + {offset}"
            );
        }
    }

    #[test]
    fn nan_passes_through_for_normalization_to_flag() {
        let Value::F64(v) = to_engineering(RawValue::Float(f64::NAN), 1.0, 0.0) else {
            panic!()
        };
        assert!(v.is_nan());
    }
}
