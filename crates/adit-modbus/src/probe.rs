//! `adit probe`: show a register block decoded every way, so a field engineer
//! finds the right type and word order in one look. The formatting is pure;
//! the CLI does the one read.

use std::fmt::Write as _;

use adit_core::modbus::{DataType, Table, WordOrder};

use crate::codec::{decode_registers, RawValue};
use crate::endpoint::{open, Endpoint};
use crate::plan::PlannedRead;
use crate::read::{read_once, Outcome};

/// What to read: a table and a half-open address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRange {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

/// Parses `holding:100..104` (registers 100-103), `holding:100..=104`
/// (100-104), or `input:7` (one register).
pub fn parse_range(s: &str) -> Result<ProbeRange, String> {
    let (table, range) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: write TABLE:START..END, e.g. holding:100..104"))?;
    let table = match table {
        "holding" => Table::HoldingRegister,
        "input" => Table::InputRegister,
        "coil" => Table::Coil,
        "discrete" => Table::DiscreteInput,
        other => {
            return Err(format!(
                "unknown table {other:?}; expected holding, input, coil or discrete"
            ))
        }
    };
    let number = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{t:?} is not an address"))
    };
    let (start, end) = if let Some((a, b)) = range.split_once("..=") {
        (number(a)?, number(b)? + 1)
    } else if let Some((a, b)) = range.split_once("..") {
        (number(a)?, number(b)?)
    } else {
        let a = number(range)?;
        (a, a + 1)
    };
    let limit = if table.is_bit_table() { 2000 } else { 125 };
    if end <= start || end > 65536 || end - start > limit {
        return Err(format!(
            "{range:?}: need 1..={limit} addresses within 0..65536"
        ));
    }
    Ok(ProbeRange {
        table,
        start: start as u16,
        count: (end - start) as u16,
    })
}

fn show(v: RawValue) -> String {
    match v {
        RawValue::Bool(b) => b.to_string(),
        RawValue::Unsigned(u) => u.to_string(),
        RawValue::Signed(i) => i.to_string(),
        RawValue::Float(f) => show_float(f),
    }
}

fn show_float(f: f64) -> String {
    if f.is_finite() && f.abs() < 1e9 && (f == 0.0 || f.abs() >= 1e-4) {
        let s = format!("{f:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{f:.3e}")
    }
}

fn cell(regs: &[u16], ty: DataType, order: WordOrder) -> String {
    match decode_registers(regs, ty, order) {
        Ok(v) => show(v),
        Err(e) => e.to_string(),
    }
}

/// Renders registers read from `range.start` as every type × order.
pub fn format_registers(range: &ProbeRange, regs: &[u16]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} registers {}..={} ({} read)",
        range.table.name(),
        range.start,
        (u32::from(range.start) + regs.len() as u32).saturating_sub(1),
        regs.len()
    );
    let _ = writeln!(
        out,
        "\n  addr     hex      u16     i16  bits 15..0          ascii"
    );
    for (i, r) in regs.iter().enumerate() {
        let [hi, lo] = r.to_be_bytes();
        let ch = |b: u8| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        };
        let _ = writeln!(
            out,
            "  {:<5}  0x{r:04X}  {r:>6}  {:>6}  {:08b} {:08b}  {}{}",
            u32::from(range.start) + i as u32,
            *r as i16,
            hi,
            lo,
            ch(hi),
            ch(lo)
        );
    }
    for (width, types) in [
        (2usize, [DataType::U32, DataType::I32, DataType::F32]),
        (4, [DataType::U64, DataType::I64, DataType::F64]),
    ] {
        if regs.len() < width {
            continue;
        }
        let _ = writeln!(
            out,
            "\n  {}-bit values starting at each address",
            width * 16
        );
        let _ = write!(out, "  {:<5}  {:<4}", "addr", "type");
        for order in WordOrder::ALL {
            let _ = write!(out, "  {:>22}", order.name());
        }
        out.push('\n');
        for start in 0..=regs.len() - width {
            let window = &regs[start..start + width];
            for ty in types {
                let _ = write!(
                    out,
                    "  {:<5}  {:<4}",
                    u32::from(range.start) + start as u32,
                    ty.name()
                );
                for order in WordOrder::ALL {
                    let _ = write!(out, "  {:>22}", cell(window, ty, order));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// Renders bits read from `range.start`.
pub fn format_bits(range: &ProbeRange, bits: &[bool]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}..={} ({} read)",
        range.table.name(),
        range.start,
        (u32::from(range.start) + bits.len() as u32).saturating_sub(1),
        bits.len()
    );
    for (i, b) in bits.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:<5}  {}",
            u32::from(range.start) + i as u32,
            u8::from(*b)
        );
    }
    out
}

/// Reads `range` once from `unit` at `endpoint` and renders it every way.
pub async fn probe(
    endpoint: &Endpoint,
    unit: u8,
    range: &ProbeRange,
    limit: std::time::Duration,
) -> Result<String, String> {
    let mut ctx = open(endpoint, unit, limit).await?;
    let read = PlannedRead {
        table: range.table,
        start: range.start,
        count: range.count,
        points: Vec::new(),
    };
    match read_once(&mut ctx, &read, limit).await {
        Outcome::Data(words) => Ok(format_registers(range, &words)),
        Outcome::Bits(bits) => Ok(format_bits(range, &bits)),
        Outcome::Exception(code) => Err(format!(
            "{} answered with exception {code} ({:?})",
            endpoint.describe(),
            tokio_modbus::ExceptionCode::new(code)
        )),
        Outcome::LinkFailed("timeout") => Err(format!(
            "{}: no answer within {limit:?}",
            endpoint.describe()
        )),
        Outcome::LinkFailed(kind) => Err(format!("{}: {kind}", endpoint.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_in_their_three_forms() {
        assert_eq!(
            parse_range("holding:100..104"),
            Ok(ProbeRange {
                table: Table::HoldingRegister,
                start: 100,
                count: 4
            })
        );
        assert_eq!(
            parse_range("input:0..=1"),
            Ok(ProbeRange {
                table: Table::InputRegister,
                start: 0,
                count: 2
            })
        );
        assert_eq!(
            parse_range("coil:7"),
            Ok(ProbeRange {
                table: Table::Coil,
                start: 7,
                count: 1
            })
        );
        assert!(parse_range("holding:5..5").is_err());
        assert!(parse_range("holding:0..200")
            .unwrap_err()
            .contains("1..=125"));
        assert!(parse_range("registers:1").is_err());
        assert!(parse_range("holding:65535..65537").is_err());
    }

    #[test]
    fn a_word_swapped_float_is_visible_in_its_column() {
        // 238.0f32 = 0x436E_0000, sent word-swapped (CDAB) by the device.
        let text = format_registers(
            &ProbeRange {
                table: Table::HoldingRegister,
                start: 100,
                count: 2,
            },
            &[0x0000, 0x436E],
        );
        let f32_row = text.lines().find(|l| l.contains(" f32")).unwrap();
        let columns: Vec<&str> = f32_row.split_whitespace().collect();
        // addr, type, ABCD, CDAB, BADC, DCBA
        assert_eq!(columns[0], "100");
        assert_eq!(columns[3], "238", "{text}");
        assert_ne!(columns[2], "238");
        assert!(text.contains("0x436E"));
    }

    #[test]
    fn a_block_too_short_for_64_bit_values_shows_only_what_fits() {
        let text = format_registers(
            &ProbeRange {
                table: Table::InputRegister,
                start: 0,
                count: 3,
            },
            &[1, 2, 3],
        );
        assert!(text.contains("32-bit"));
        assert!(!text.contains("64-bit"));
    }
}
