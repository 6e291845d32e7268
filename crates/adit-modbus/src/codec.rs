//! Registers ↔ numbers, for every data type and byte/word order. Pure, no I/O,
//! no allocation on decode.
//!
//! Convention: the wire registers are first put back into big-endian `ABCD…`
//! order (reverse the registers if words are swapped, swap the two bytes of
//! each register if bytes are swapped), then read as one big-endian number.
//! Encoding does the exact inverse, so `decode(encode(x)) == x` for every type
//! and order (property-tested).

use adit_core::modbus::{DataType, WordOrder};

pub use adit_core::engineering::RawValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} registers, got {got}")]
    WrongLength { expected: usize, got: usize },
    #[error("a string is not a number: use decode_string")]
    NotNumeric,
}

/// Decodes fixed-length ASCII text: two characters per register, high byte
/// first (`ABCD`, `CDAB`) or low byte first (`BADC`, `DCBA`); word order does
/// not apply to text. Trailing NULs and spaces are trimmed; bytes that are not
/// printable ASCII become `?`.
pub fn decode_string(regs: &[u16], order: WordOrder) -> String {
    let mut text = String::with_capacity(regs.len() * 2);
    for reg in regs {
        let [a, b] = if order.bytes_swapped() {
            reg.to_le_bytes()
        } else {
            reg.to_be_bytes()
        };
        for byte in [a, b] {
            text.push(if byte == 0 || byte.is_ascii_graphic() || byte == b' ' {
                char::from(byte)
            } else {
                '?'
            });
        }
    }
    let trimmed = text.trim_end_matches(['\0', ' ']).len();
    text.truncate(trimmed);
    text.replace('\0', "?")
}

/// Encodes text into registers (the inverse of [`decode_string`]), padding
/// with NULs and cutting what does not fit.
pub fn encode_string(text: &str, order: WordOrder, out: &mut [u16]) {
    let bytes = text.as_bytes();
    for (i, slot) in out.iter_mut().enumerate() {
        let a = bytes.get(2 * i).copied().unwrap_or(0);
        let b = bytes.get(2 * i + 1).copied().unwrap_or(0);
        *slot = if order.bytes_swapped() {
            u16::from_le_bytes([a, b])
        } else {
            u16::from_be_bytes([a, b])
        };
    }
}

/// Puts wire registers into big-endian byte order in `out[..2 * regs.len()]`.
fn to_big_endian_bytes(regs: &[u16], order: WordOrder, out: &mut [u8; 8]) {
    let n = regs.len();
    for i in 0..n {
        let reg = if order.words_swapped() {
            regs[n - 1 - i]
        } else {
            regs[i]
        };
        let reg = if order.bytes_swapped() {
            reg.swap_bytes()
        } else {
            reg
        };
        out[2 * i..2 * i + 2].copy_from_slice(&reg.to_be_bytes());
    }
}

/// Decodes the registers of one point. `regs.len()` must equal the type's width
/// (`bool` takes one register and needs a bit: use [`decode_bit`]).
pub fn decode_registers(
    regs: &[u16],
    ty: DataType,
    order: WordOrder,
) -> Result<RawValue, DecodeError> {
    let width = usize::from(ty.register_count());
    if regs.len() != width {
        return Err(DecodeError::WrongLength {
            expected: width,
            got: regs.len(),
        });
    }
    if matches!(ty, DataType::String(_)) {
        return Err(DecodeError::NotNumeric);
    }
    let mut b = [0u8; 8];
    to_big_endian_bytes(regs, order, &mut b);
    Ok(match ty {
        DataType::Bool => RawValue::Bool(regs[0] != 0),
        DataType::U16 => RawValue::Unsigned(u64::from(u16::from_be_bytes([b[0], b[1]]))),
        DataType::I16 => RawValue::Signed(i64::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::U32 => {
            RawValue::Unsigned(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }
        DataType::I32 => RawValue::Signed(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::F32 => RawValue::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::U64 => RawValue::Unsigned(u64::from_be_bytes(b)),
        DataType::I64 => RawValue::Signed(i64::from_be_bytes(b)),
        DataType::F64 => RawValue::Float(f64::from_be_bytes(b)),
        DataType::String(_) => return Err(DecodeError::NotNumeric),
    })
}

/// A single bit of a register (bit 0 = least significant), after applying the
/// byte order to the register.
pub fn decode_bit(reg: u16, bit: u8, order: WordOrder) -> bool {
    let reg = if order.bytes_swapped() {
        reg.swap_bytes()
    } else {
        reg
    };
    (reg >> (bit & 15)) & 1 == 1
}

/// Encodes a value into `out` (whose length must be the type's width).
/// Integers are truncated to the type's width; used by simulators and tests.
pub fn encode_registers(
    value: RawValue,
    ty: DataType,
    order: WordOrder,
    out: &mut [u16],
) -> Result<(), DecodeError> {
    let width = usize::from(ty.register_count());
    if out.len() != width {
        return Err(DecodeError::WrongLength {
            expected: width,
            got: out.len(),
        });
    }
    let as_i128 = |v: RawValue| -> i128 {
        match v {
            RawValue::Bool(b) => i128::from(b),
            RawValue::Unsigned(u) => i128::from(u),
            RawValue::Signed(i) => i128::from(i),
            RawValue::Float(f) => f as i128,
        }
    };
    let as_f64 = |v: RawValue| -> f64 {
        match v {
            RawValue::Bool(b) => f64::from(u8::from(b)),
            RawValue::Unsigned(u) => u as f64,
            RawValue::Signed(i) => i as f64,
            RawValue::Float(f) => f,
        }
    };
    let mut b = [0u8; 8];
    match ty {
        DataType::Bool => b[..2].copy_from_slice(&u16::from(as_i128(value) != 0).to_be_bytes()),
        DataType::U16 | DataType::I16 => {
            b[..2].copy_from_slice(&(as_i128(value) as u16).to_be_bytes());
        }
        DataType::U32 | DataType::I32 => {
            b[..4].copy_from_slice(&(as_i128(value) as u32).to_be_bytes());
        }
        DataType::U64 | DataType::I64 => b.copy_from_slice(&(as_i128(value) as u64).to_be_bytes()),
        DataType::F32 => b[..4].copy_from_slice(&(as_f64(value) as f32).to_be_bytes()),
        DataType::F64 => b.copy_from_slice(&as_f64(value).to_be_bytes()),
        DataType::String(_) => return Err(DecodeError::NotNumeric),
    }
    for i in 0..width {
        let reg = u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
        let reg = if order.bytes_swapped() {
            reg.swap_bytes()
        } else {
            reg
        };
        let slot = if order.words_swapped() {
            width - 1 - i
        } else {
            i
        };
        out[slot] = reg;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DataType::*;
    use WordOrder::*;

    /// Golden vectors: what a device puts on the wire, and what it means.
    /// 32-bit: `0x4174_CCCD` is 15.3f32 / `1_098_173_645u32`.
    /// 64-bit: `0x0102_0304_0506_0708`.
    #[test]
    fn golden_vectors_decode_in_every_type_and_order() {
        let cases: &[(&[u16], DataType, WordOrder, RawValue)] = &[
            (&[0x1234], U16, Abcd, RawValue::Unsigned(0x1234)),
            (&[0x1234], U16, Cdab, RawValue::Unsigned(0x1234)),
            (&[0x3412], U16, Badc, RawValue::Unsigned(0x1234)),
            (&[0x3412], U16, Dcba, RawValue::Unsigned(0x1234)),
            (&[0xFFFE], I16, Abcd, RawValue::Signed(-2)),
            (&[0xFEFF], I16, Badc, RawValue::Signed(-2)),
            (&[0x8000], I16, Cdab, RawValue::Signed(-32768)),
            (
                &[0x4174, 0xCCCD],
                U32,
                Abcd,
                RawValue::Unsigned(0x4174_CCCD),
            ),
            (
                &[0xCCCD, 0x4174],
                U32,
                Cdab,
                RawValue::Unsigned(0x4174_CCCD),
            ),
            (
                &[0x7441, 0xCDCC],
                U32,
                Badc,
                RawValue::Unsigned(0x4174_CCCD),
            ),
            (
                &[0xCDCC, 0x7441],
                U32,
                Dcba,
                RawValue::Unsigned(0x4174_CCCD),
            ),
            (&[0xFFFF, 0xFFFE], I32, Abcd, RawValue::Signed(-2)),
            (&[0xFFFE, 0xFFFF], I32, Cdab, RawValue::Signed(-2)),
            (&[0xFFFF, 0xFEFF], I32, Badc, RawValue::Signed(-2)),
            (&[0xFEFF, 0xFFFF], I32, Dcba, RawValue::Signed(-2)),
            (
                &[0x4174, 0xCCCD],
                F32,
                Abcd,
                RawValue::Float(f64::from(15.3f32)),
            ),
            (
                &[0xCCCD, 0x4174],
                F32,
                Cdab,
                RawValue::Float(f64::from(15.3f32)),
            ),
            (
                &[0x7441, 0xCDCC],
                F32,
                Badc,
                RawValue::Float(f64::from(15.3f32)),
            ),
            (
                &[0xCDCC, 0x7441],
                F32,
                Dcba,
                RawValue::Float(f64::from(15.3f32)),
            ),
            (
                &[0x0102, 0x0304, 0x0506, 0x0708],
                U64,
                Abcd,
                RawValue::Unsigned(0x0102_0304_0506_0708),
            ),
            (
                &[0x0708, 0x0506, 0x0304, 0x0102],
                U64,
                Cdab,
                RawValue::Unsigned(0x0102_0304_0506_0708),
            ),
            (
                &[0x0201, 0x0403, 0x0605, 0x0807],
                U64,
                Badc,
                RawValue::Unsigned(0x0102_0304_0506_0708),
            ),
            (
                &[0x0807, 0x0605, 0x0403, 0x0201],
                U64,
                Dcba,
                RawValue::Unsigned(0x0102_0304_0506_0708),
            ),
            (
                &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD],
                I64,
                Abcd,
                RawValue::Signed(-3),
            ),
            (
                &[0xFFFD, 0xFFFF, 0xFFFF, 0xFFFF],
                I64,
                Cdab,
                RawValue::Signed(-3),
            ),
            (
                &[0xFFFF, 0xFFFF, 0xFFFF, 0xFDFF],
                I64,
                Badc,
                RawValue::Signed(-3),
            ),
            (
                &[0xFDFF, 0xFFFF, 0xFFFF, 0xFFFF],
                I64,
                Dcba,
                RawValue::Signed(-3),
            ),
            // 238.5 as f64 = 0x406D_D000_0000_0000
            (
                &[0x406D, 0xD000, 0x0000, 0x0000],
                F64,
                Abcd,
                RawValue::Float(238.5),
            ),
            (
                &[0x0000, 0x0000, 0xD000, 0x406D],
                F64,
                Cdab,
                RawValue::Float(238.5),
            ),
            (
                &[0x6D40, 0x00D0, 0x0000, 0x0000],
                F64,
                Badc,
                RawValue::Float(238.5),
            ),
            (
                &[0x0000, 0x0000, 0x00D0, 0x6D40],
                F64,
                Dcba,
                RawValue::Float(238.5),
            ),
        ];
        for (regs, ty, order, expected) in cases {
            assert_eq!(
                decode_registers(regs, *ty, *order),
                Ok(*expected),
                "{} {}: {regs:04X?}",
                ty.name(),
                order.name()
            );
            let mut back = vec![0u16; regs.len()];
            encode_registers(*expected, *ty, *order, &mut back).unwrap();
            assert_eq!(&back[..], *regs, "encode {} {}", ty.name(), order.name());
        }
    }

    /// The commissioning mistake from the field: a float read with the wrong word
    /// order gives an absurd value rather than an error.
    #[test]
    fn wrong_word_order_gives_an_absurd_value_not_the_right_one() {
        let mut wire = [0u16; 2];
        encode_registers(RawValue::Float(238.0), F32, Cdab, &mut wire).unwrap();
        let RawValue::Float(misread) = decode_registers(&wire, F32, Abcd).unwrap() else {
            panic!()
        };
        assert!((misread - 238.0).abs() > 1.0, "{misread}");
    }

    #[test]
    fn strings_decode_in_both_byte_orders_and_trim_padding() {
        // "TUNNEL A" + NUL padding; a device serial number in 5 registers.
        let abcd = [0x5455, 0x4E4E, 0x454C, 0x2041, 0x0000];
        assert_eq!(decode_string(&abcd, Abcd), "TUNNEL A");
        let badc = [0x5554, 0x4E4E, 0x4C45, 0x4120, 0x0000];
        assert_eq!(decode_string(&badc, Badc), "TUNNEL A");
        assert_eq!(decode_string(&[0x41FF], Abcd), "A?");
        let mut back = [0u16; 5];
        encode_string("TUNNEL A", Badc, &mut back);
        assert_eq!(back, badc);
        assert_eq!(
            decode_registers(&abcd, DataType::String(5), Abcd),
            Err(DecodeError::NotNumeric)
        );
    }

    #[test]
    fn register_bits_honour_byte_order() {
        assert!(decode_bit(0x0001, 0, Abcd));
        assert!(!decode_bit(0x0001, 1, Abcd));
        assert!(decode_bit(0x8000, 15, Abcd));
        assert!(decode_bit(0x0100, 0, Badc));
    }

    #[test]
    fn wrong_register_count_is_an_error_not_a_panic() {
        assert_eq!(
            decode_registers(&[1], F32, Abcd),
            Err(DecodeError::WrongLength {
                expected: 2,
                got: 1
            })
        );
    }

    fn any_order() -> impl Strategy<Value = WordOrder> {
        prop::sample::select(WordOrder::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn integers_round_trip_in_every_order(v in any::<i64>(), order in any_order()) {
            let mut r4 = [0u16; 4];
            encode_registers(RawValue::Signed(v), I64, order, &mut r4).unwrap();
            prop_assert_eq!(decode_registers(&r4, I64, order).unwrap(), RawValue::Signed(v));
            let v32 = v as i32;
            let mut r2 = [0u16; 2];
            encode_registers(RawValue::Signed(i64::from(v32)), I32, order, &mut r2).unwrap();
            prop_assert_eq!(decode_registers(&r2, I32, order).unwrap(), RawValue::Signed(i64::from(v32)));
            let u32v = v as u32;
            encode_registers(RawValue::Unsigned(u64::from(u32v)), U32, order, &mut r2).unwrap();
            prop_assert_eq!(decode_registers(&r2, U32, order).unwrap(), RawValue::Unsigned(u64::from(u32v)));
            let mut r1 = [0u16; 1];
            encode_registers(RawValue::Signed(i64::from(v as i16)), I16, order, &mut r1).unwrap();
            prop_assert_eq!(decode_registers(&r1, I16, order).unwrap(), RawValue::Signed(i64::from(v as i16)));
            encode_registers(RawValue::Unsigned(u64::from(v as u16)), U16, order, &mut r1).unwrap();
            prop_assert_eq!(decode_registers(&r1, U16, order).unwrap(), RawValue::Unsigned(u64::from(v as u16)));
            encode_registers(RawValue::Unsigned(v as u64), U64, order, &mut r4).unwrap();
            prop_assert_eq!(decode_registers(&r4, U64, order).unwrap(), RawValue::Unsigned(v as u64));
        }

        #[test]
        fn floats_round_trip_bit_exactly(bits in any::<u64>(), order in any_order()) {
            let f = f64::from_bits(bits);
            let mut r4 = [0u16; 4];
            encode_registers(RawValue::Float(f), F64, order, &mut r4).unwrap();
            let RawValue::Float(back) = decode_registers(&r4, F64, order).unwrap() else { unreachable!() };
            prop_assert_eq!(back.to_bits(), f.to_bits());
            let f32v = f32::from_bits(bits as u32);
            let mut r2 = [0u16; 2];
            encode_registers(RawValue::Float(f64::from(f32v)), F32, order, &mut r2).unwrap();
            let RawValue::Float(back) = decode_registers(&r2, F32, order).unwrap() else { unreachable!() };
            prop_assert!(back.to_bits() == f64::from(f32v).to_bits() || (back.is_nan() && f32v.is_nan()));
        }
    }
}
