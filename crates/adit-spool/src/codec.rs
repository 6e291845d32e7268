//! Batches of readings ↔ record payloads. Pure, little-endian, versioned.
//!
//! Version 4 (packed): `4 | fingerprint u64 | count varint | readings…`,
//! each reading `point varint | head u8 | value | [reason] | source |
//! [received]`:
//! - `head`: bits 0–2 the value tag (0 none, 1 f64, 2 i64, 3 bool,
//!   4 text), bits 3–4 the quality class (0 good, 1 uncertain, 2 bad),
//!   bit 5 set when `received_ts == source_ts` (then no `received`), bits
//!   6–7 zero (quality class 3 and value tags 5–7 are invalid too);
//! - value: 8 bytes (f64, i64), 1 byte (bool), or `len varint` + UTF-8;
//! - reason (uncertain and bad only): `code u8`, then `detail varint` for
//!   a device exception (2) or a protocol status (9), and for a status its
//!   `name` (`len u8` + ASCII);
//! - `source`: the zigzag varint of `source_ts` minus the previous
//!   reading's (0 before the first), wrapping; `received`: the zigzag
//!   varint of `received_ts − source_ts`, wrapping.
//!
//! A poll's readings share a time, so a Modbus reading of a number takes
//! about 12 bytes instead of version 3's 35: fewer bytes to write, checksum,
//! fsync and read back. Varints are LEB128 (7 bits a byte, at most 10).
//!
//! **Version 4 is read but not yet written** ([`encode_batch`] writes
//! version 3, [`encode_batch_packed`] version 4): an adit older than this
//! one would skip version 4 records as undecodable (counted, then deleted
//! with the segment), so a release that writes them must come after one
//! that reads them has been deployed everywhere a rollback could go. From
//! this one on, a record of an unknown version is also kept in quarantine
//! (spool invariant 7), so a later format is rollback-safe as well.
//!
//! Written today, and read: version 3,
//! `3 | fingerprint u64 | count u32 | readings…`, each `point u32 | value |
//! quality u8 | reason u8 | detail u32 | [name] | source_ts i64 |
//! received_ts i64` (value: `tag u8` then 8 bytes, 1 byte or `len u32` +
//! UTF-8); version 1, the same with `detail u8` and no status reason.
//! `detail` is the Modbus exception or protocol status code. The
//! fingerprint names the point table the ids refer to (see `points`).
//!
//! Version 2 payloads carry alert transitions instead of readings:
//! `2 | fingerprint | count u32 | alerts…`, each `ts i64 | fired u8 | rule |
//! severity | subject | summary | labels` (strings as `len u32` + UTF-8;
//! `labels` is a JSON object).

use std::sync::Arc;

use adit_core::{PointId, Quality, Reading, Reason, Timestamp, Value};

/// Readings written by adit before protocol statuses (`detail u8`).
const VERSION_READINGS_V1: u8 = 1;
const VERSION_ALERTS: u8 = 2;
/// Readings with fixed-width fields (read, no longer written).
const VERSION_READINGS_V3: u8 = 3;
const VERSION: u8 = 4;
/// `head` bit: the receive time is the source time.
const RECEIVED_IS_SOURCE: u8 = 1 << 5;
/// The reason tag of a protocol status (`Reason::Status`).
const REASON_STATUS: u8 = 9;

/// An alert transition as it is stored: the history of what fired and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRecord {
    pub ts: Timestamp,
    /// True when the alert fired, false when it resolved.
    pub fired: bool,
    pub rule: String,
    pub severity: String,
    /// The point or device the alert is about.
    pub subject: String,
    pub summary: String,
    /// All labels, as a JSON object.
    pub labels_json: String,
}

/// What a record holds.
#[derive(Debug, PartialEq)]
pub enum Payload {
    Readings(u64, Vec<Reading>),
    Alerts(Vec<AlertRecord>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the payload for alert transitions to `out`.
pub fn encode_alerts(alerts: &[AlertRecord], out: &mut Vec<u8>) {
    out.push(VERSION_ALERTS);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(alerts.len() as u32).to_le_bytes());
    for a in alerts {
        out.extend_from_slice(&a.ts.0.to_le_bytes());
        out.push(u8::from(a.fired));
        for s in [&a.rule, &a.severity, &a.subject, &a.summary, &a.labels_json] {
            put_str(out, s);
        }
    }
}

/// Number of items (readings or alerts) in a payload, from its header only
/// (0 if it is too short to say).
pub(crate) fn items_in(payload: &[u8]) -> u64 {
    let mut c = Cursor {
        bytes: payload,
        at: 9,
    };
    match payload.first() {
        Some(&VERSION) => c.varint().unwrap_or(0),
        _ => c.array().map_or(0, |b| u64::from(u32::from_le_bytes(b))),
    }
}

/// Decodes any payload.
pub fn decode_payload(bytes: &[u8]) -> Result<Payload, CodecError> {
    match bytes.first() {
        Some(&VERSION_ALERTS) => decode_alerts(bytes).map(Payload::Alerts),
        _ => decode_batch(bytes).map(|(fp, r)| Payload::Readings(fp, r)),
    }
}

fn decode_alerts(bytes: &[u8]) -> Result<Vec<AlertRecord>, CodecError> {
    let mut c = Cursor { bytes, at: 0 };
    let _version = c.u8()?;
    let _fingerprint: [u8; 8] = c.array()?;
    let count = u32::from_le_bytes(c.array()?) as usize;
    let mut out = Vec::with_capacity(count.min(bytes.len() / 29));
    let text = |c: &mut Cursor<'_>| -> Result<String, CodecError> {
        let len = u32::from_le_bytes(c.array()?) as usize;
        std::str::from_utf8(c.take(len)?)
            .map(str::to_string)
            .map_err(|_| CodecError::Utf8)
    };
    for _ in 0..count {
        let ts = Timestamp(i64::from_le_bytes(c.array()?));
        let fired = c.u8()? != 0;
        out.push(AlertRecord {
            ts,
            fired,
            rule: text(&mut c)?,
            severity: text(&mut c)?,
            subject: text(&mut c)?,
            summary: text(&mut c)?,
            labels_json: text(&mut c)?,
        });
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("payload ends early")]
    Truncated,
    #[error("unknown payload version {0}")]
    Version(u8),
    #[error("invalid {0} tag {1}")]
    Tag(&'static str, u8),
    #[error("text is not UTF-8")]
    Utf8,
    #[error("invalid varint")]
    Varint,
}

fn reason_code(r: Option<Reason>) -> (u8, u32) {
    match r {
        None => (0, 0),
        Some(Reason::CommFailure) => (1, 0),
        Some(Reason::DeviceException(c)) => (2, u32::from(c)),
        Some(Reason::OutOfRange) => (3, 0),
        Some(Reason::Conversion) => (4, 0),
        Some(Reason::Stale) => (5, 0),
        Some(Reason::LastKnownValue) => (6, 0),
        Some(Reason::ClockInvalid) => (7, 0),
        Some(Reason::SensorFailure) => (8, 0),
        Some(Reason::Status { code, .. }) => (REASON_STATUS, code),
    }
}

fn reason_from(code: u8, detail: u32, c: &mut Cursor<'_>) -> Result<Option<Reason>, CodecError> {
    Ok(Some(match code {
        0 => return Ok(None),
        1 => Reason::CommFailure,
        2 => Reason::DeviceException(detail as u8),
        REASON_STATUS => {
            let len = usize::from(c.u8()?);
            let name = std::str::from_utf8(c.take(len)?).map_err(|_| CodecError::Utf8)?;
            Reason::status(detail, name)
        }
        3 => Reason::OutOfRange,
        4 => Reason::Conversion,
        5 => Reason::Stale,
        6 => Reason::LastKnownValue,
        7 => Reason::ClockInvalid,
        8 => Reason::SensorFailure,
        other => return Err(CodecError::Tag("reason", other)),
    }))
}

/// Appends the payload for `readings` to `out`, in the format every adit
/// since version 3 reads (see the module: version 4 is read, not yet
/// written).
pub fn encode_batch(fingerprint: u64, readings: &[Reading], out: &mut Vec<u8>) {
    out.reserve(13 + readings.len() * 35);
    out.push(VERSION_READINGS_V3);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&(readings.len() as u32).to_le_bytes());
    for r in readings {
        if !encode_number_v3(r, out) {
            encode_reading_v3(r, out);
        }
    }
}

/// A number without a status name (what polling gives, nearly every
/// reading): its 35 bytes built on the stack and appended at once, the
/// same bytes as [`encode_reading_v3`]. `false` for anything else.
fn encode_number_v3(r: &Reading, out: &mut Vec<u8>) -> bool {
    let (tag, value) = match r.value {
        Some(Value::F64(v)) => (1, v.to_le_bytes()),
        Some(Value::I64(v)) => (2, v.to_le_bytes()),
        _ => return false,
    };
    let reason = r.quality.reason();
    if matches!(reason, Some(Reason::Status { .. })) {
        return false;
    }
    let (code, detail) = reason_code(reason);
    let mut b = [0u8; 35];
    b[0..4].copy_from_slice(&r.point.0.to_le_bytes());
    b[4] = tag;
    b[5..13].copy_from_slice(&value);
    b[13] = r.quality.class() as u8;
    b[14] = code;
    b[15..19].copy_from_slice(&detail.to_le_bytes());
    b[19..27].copy_from_slice(&r.source_ts.0.to_le_bytes());
    b[27..35].copy_from_slice(&r.received_ts.0.to_le_bytes());
    out.extend_from_slice(&b);
    true
}

/// One reading in version 3, field by field.
fn encode_reading_v3(r: &Reading, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.point.0.to_le_bytes());
    match &r.value {
        None => out.push(0),
        Some(Value::F64(v)) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Some(Value::I64(v)) => {
            out.push(2);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Some(Value::Bool(v)) => {
            out.push(3);
            out.push(u8::from(*v));
        }
        Some(Value::Text(t)) => {
            out.push(4);
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
    }
    let (code, detail) = reason_code(r.quality.reason());
    out.push(r.quality.class() as u8);
    out.push(code);
    out.extend_from_slice(&detail.to_le_bytes());
    if let Some(Reason::Status { name, .. }) = r.quality.reason() {
        let name = name.as_str().as_bytes();
        let name = &name[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }
    out.extend_from_slice(&r.source_ts.0.to_le_bytes());
    out.extend_from_slice(&r.received_ts.0.to_le_bytes());
}

/// Appends the payload for `readings` to `out` in version 4 (packed). Not
/// yet what the spool writes: see the module.
pub fn encode_batch_packed(fingerprint: u64, readings: &[Reading], out: &mut Vec<u8>) {
    out.reserve(14 + readings.len() * 14);
    out.push(VERSION);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    put_varint(out, readings.len() as u64);
    let mut previous = 0i64;
    for r in readings {
        put_varint(out, u64::from(r.point.0));
        let tag: u8 = match &r.value {
            None => 0,
            Some(Value::F64(_)) => 1,
            Some(Value::I64(_)) => 2,
            Some(Value::Bool(_)) => 3,
            Some(Value::Text(_)) => 4,
        };
        let same = r.received_ts == r.source_ts;
        out.push(tag | (r.quality.class() as u8) << 3 | if same { RECEIVED_IS_SOURCE } else { 0 });
        match &r.value {
            None => {}
            Some(Value::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            Some(Value::I64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            Some(Value::Bool(v)) => out.push(u8::from(*v)),
            Some(Value::Text(t)) => {
                put_varint(out, t.len() as u64);
                out.extend_from_slice(t.as_bytes());
            }
        }
        if let Some(reason) = r.quality.reason() {
            let (code, detail) = reason_code(Some(reason));
            out.push(code);
            if code == 2 || code == REASON_STATUS {
                put_varint(out, u64::from(detail));
            }
            if let Reason::Status { name, .. } = reason {
                let name = name.as_str().as_bytes();
                let name = &name[..name.len().min(255)];
                out.push(name.len() as u8);
                out.extend_from_slice(name);
            }
        }
        put_varint(out, zigzag(r.source_ts.0.wrapping_sub(previous)));
        previous = r.source_ts.0;
        if !same {
            put_varint(out, zigzag(r.received_ts.0.wrapping_sub(r.source_ts.0)));
        }
    }
}

/// LEB128: seven bits a byte, low first, high bit set on all but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Small magnitudes, either sign, to small unsigned numbers.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).ok_or(CodecError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(CodecError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// A LEB128 varint of at most 10 bytes (64 bits).
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                // Bits beyond 64.
                return Err(CodecError::Varint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Varint)
    }
    fn varint_u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| CodecError::Varint)
    }
}

/// Decodes a payload into `(fingerprint, readings)`.
pub fn decode_batch(bytes: &[u8]) -> Result<(u64, Vec<Reading>), CodecError> {
    match bytes.first() {
        Some(&VERSION) => decode_batch_v4(bytes),
        _ => decode_batch_fixed(bytes),
    }
}

fn decode_batch_v4(bytes: &[u8]) -> Result<(u64, Vec<Reading>), CodecError> {
    let mut c = Cursor { bytes, at: 1 };
    let fingerprint = u64::from_le_bytes(c.array()?);
    let count = usize::try_from(c.varint()?).map_err(|_| CodecError::Varint)?;
    // At least three bytes a reading (point, head, source); a corrupt
    // count (quarantine files have no CRC) reserves little: the vector grows.
    let mut readings = Vec::with_capacity(count.min(bytes.len() / 3).min(1 << 12));
    let mut previous = 0i64;
    for _ in 0..count {
        let point = PointId(c.varint_u32()?);
        let head = c.u8()?;
        if head & 0b1100_0000 != 0 {
            return Err(CodecError::Tag("head", head));
        }
        let value = match head & 0b111 {
            0 => None,
            1 => Some(Value::F64(f64::from_le_bytes(c.array()?))),
            2 => Some(Value::I64(i64::from_le_bytes(c.array()?))),
            3 => Some(Value::Bool(c.u8()? != 0)),
            4 => {
                let len = usize::try_from(c.varint()?).map_err(|_| CodecError::Varint)?;
                let text = std::str::from_utf8(c.take(len)?).map_err(|_| CodecError::Utf8)?;
                Some(Value::Text(Arc::from(text)))
            }
            other => return Err(CodecError::Tag("value", other)),
        };
        let class = (head >> 3) & 0b11;
        let quality = if class == 0 {
            Quality::Good
        } else {
            let code = c.u8()?;
            let detail = if code == 2 || code == REASON_STATUS {
                c.varint_u32()?
            } else {
                0
            };
            let reason = reason_from(code, detail, &mut c)?;
            match (class, reason) {
                (1, Some(r)) => Quality::Uncertain(r),
                (2, Some(r)) => Quality::Bad(r),
                _ => return Err(CodecError::Tag("quality", class)),
            }
        };
        let source = previous.wrapping_add(unzigzag(c.varint()?));
        previous = source;
        let received = if head & RECEIVED_IS_SOURCE != 0 {
            source
        } else {
            source.wrapping_add(unzigzag(c.varint()?))
        };
        readings.push(Reading {
            point,
            value,
            quality,
            source_ts: Timestamp(source),
            received_ts: Timestamp(received),
        });
    }
    Ok((fingerprint, readings))
}

/// Versions 3 and 1 (fixed-width fields).
fn decode_batch_fixed(bytes: &[u8]) -> Result<(u64, Vec<Reading>), CodecError> {
    let mut c = Cursor { bytes, at: 0 };
    let version = c.u8()?;
    if version != VERSION_READINGS_V3 && version != VERSION_READINGS_V1 {
        return Err(CodecError::Version(version));
    }
    let fingerprint = u64::from_le_bytes(c.array()?);
    let count = u32::from_le_bytes(c.array()?) as usize;
    let mut readings = Vec::with_capacity(count.min(bytes.len() / 27));
    for _ in 0..count {
        let point = PointId(u32::from_le_bytes(c.array()?));
        let value = match c.u8()? {
            0 => None,
            1 => Some(Value::F64(f64::from_le_bytes(c.array()?))),
            2 => Some(Value::I64(i64::from_le_bytes(c.array()?))),
            3 => Some(Value::Bool(c.u8()? != 0)),
            4 => {
                let len = u32::from_le_bytes(c.array()?) as usize;
                let text = std::str::from_utf8(c.take(len)?).map_err(|_| CodecError::Utf8)?;
                Some(Value::Text(Arc::from(text)))
            }
            other => return Err(CodecError::Tag("value", other)),
        };
        let class = c.u8()?;
        let code = c.u8()?;
        let detail = if version == VERSION_READINGS_V1 {
            u32::from(c.u8()?)
        } else {
            u32::from_le_bytes(c.array()?)
        };
        let reason = reason_from(code, detail, &mut c)?;
        let quality = match (class, reason) {
            (0, _) => Quality::Good,
            (1, Some(r)) => Quality::Uncertain(r),
            (2, Some(r)) => Quality::Bad(r),
            (other, _) => return Err(CodecError::Tag("quality", other)),
        };
        let source_ts = Timestamp(i64::from_le_bytes(c.array()?));
        let received_ts = Timestamp(i64::from_le_bytes(c.array()?));
        readings.push(Reading {
            point,
            value,
            quality,
            source_ts,
            received_ts,
        });
    }
    Ok((fingerprint, readings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_reading() -> impl Strategy<Value = Reading> {
        let value = prop_oneof![
            Just(None),
            any::<f64>().prop_map(|v| Some(Value::F64(v))),
            any::<i64>().prop_map(|v| Some(Value::I64(v))),
            any::<bool>().prop_map(|v| Some(Value::Bool(v))),
            "[ -~]{0,20}".prop_map(|t| Some(Value::Text(t.into()))),
            ".{0,300}".prop_map(|t| Some(Value::Text(t.into()))),
        ];
        let reason = prop_oneof![
            Just(Reason::CommFailure),
            any::<u8>().prop_map(Reason::DeviceException),
            Just(Reason::OutOfRange),
            Just(Reason::Conversion),
            Just(Reason::Stale),
            Just(Reason::LastKnownValue),
            Just(Reason::ClockInvalid),
            Just(Reason::SensorFailure),
            (any::<u32>(), "[A-Za-z]{1,30}").prop_map(|(code, name)| Reason::status(code, &name)),
        ];
        let quality = prop_oneof![
            Just(Quality::Good),
            reason.clone().prop_map(Quality::Uncertain),
            reason.prop_map(Quality::Bad)
        ];
        // Times that repeat (a poll's readings share one), that are near,
        // and any at all (the deltas wrap); a receive time that is the
        // source time (Modbus) or not.
        let time = prop_oneof![
            Just(1_700_000_000_000_000i64),
            1_700_000_000_000_000i64..1_700_000_001_000_000,
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
        ];
        (
            any::<u32>(),
            value,
            quality,
            time.clone(),
            prop::option::of(time),
        )
            .prop_map(|(p, value, quality, s, r)| Reading {
                point: PointId(p),
                value,
                quality,
                source_ts: Timestamp(s),
                received_ts: Timestamp(r.unwrap_or(s)),
            })
    }

    type Encoder = fn(u64, &[Reading], &mut Vec<u8>);
    /// The format written today, and the packed one.
    const ENCODERS: [Encoder; 2] = [encode_batch, encode_batch_packed];

    fn same(a: &Reading, b: &Reading) -> bool {
        let values = match (&a.value, &b.value) {
            (Some(Value::F64(x)), Some(Value::F64(y))) => x.to_bits() == y.to_bits(),
            (x, y) => x == y,
        };
        values
            && a.point == b.point
            && a.quality == b.quality
            && a.source_ts == b.source_ts
            && a.received_ts == b.received_ts
    }

    #[test]
    fn alert_records_round_trip_and_are_told_apart_from_readings() {
        let alerts = vec![AlertRecord {
            ts: Timestamp(1_800_000_000_000_000),
            fired: true,
            rule: "CoHigh".into(),
            severity: "warning".into(),
            subject: "bore_a.co_1".into(),
            summary: "CO above 70 ppm".into(),
            labels_json: "{\"site\":\"x\"}".into(),
        }];
        let mut bytes = Vec::new();
        encode_alerts(&alerts, &mut bytes);
        assert_eq!(decode_payload(&bytes), Ok(Payload::Alerts(alerts)));
        let mut readings = Vec::new();
        encode_batch(7, &[], &mut readings);
        assert_eq!(decode_payload(&readings), Ok(Payload::Readings(7, vec![])));
        assert!(decode_payload(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A version 1 payload as adit wrote it before protocol statuses, laid
    /// out byte by byte from the old format (not by today's encoder).
    pub(crate) fn v1_payload(fingerprint: u64) -> Vec<u8> {
        let mut b = vec![1u8];
        b.extend_from_slice(&fingerprint.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes()); // count
                                                  // point 0: f64 12.5, good
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&12.5f64.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&1_000i64.to_le_bytes());
        b.extend_from_slice(&1_005i64.to_le_bytes());
        // point 1: no value, bad(device_exception(2))
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&[2, 2, 2]);
        b.extend_from_slice(&2_000i64.to_le_bytes());
        b.extend_from_slice(&2_005i64.to_le_bytes());
        b
    }

    /// A version 3 payload as adit wrote it before varints, laid out byte
    /// by byte from the old format (not by today's encoder).
    fn v3_payload(fingerprint: u64) -> Vec<u8> {
        let mut b = vec![3u8];
        b.extend_from_slice(&fingerprint.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes()); // count
                                                  // point 0: f64 12.5, good
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&12.5f64.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1_000i64.to_le_bytes());
        b.extend_from_slice(&1_005i64.to_le_bytes());
        // point 1: no value, uncertain(status 0x40900000 "LastUsable")
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&[1, 9]);
        b.extend_from_slice(&0x4090_0000u32.to_le_bytes());
        b.push(10);
        b.extend_from_slice(b"LastUsable");
        b.extend_from_slice(&2_000i64.to_le_bytes());
        b.extend_from_slice(&2_000i64.to_le_bytes());
        b
    }

    /// A poll of 100 registers (one time, received when read) takes about
    /// a third of version 3's 35 bytes a reading.
    #[test]
    fn a_polled_block_takes_about_twelve_bytes_a_reading() {
        let t = 1_796_649_091_752_537i64;
        let batch: Vec<Reading> = (0..100u32)
            .map(|i| Reading {
                point: PointId(5_000 + i),
                value: Some(Value::F64(f64::from(i) * 0.5)),
                quality: Quality::Good,
                source_ts: Timestamp(t),
                received_ts: Timestamp(t),
            })
            .collect();
        let mut bytes = Vec::new();
        encode_batch_packed(1, &batch, &mut bytes);
        let per_reading = bytes.len() as f64 / 100.0;
        println!("spool payload: {} bytes for 100 polled readings ({per_reading:.2} a reading; version 3: 35)", bytes.len());
        assert!(per_reading < 12.5, "{per_reading}");
        assert_eq!(decode_batch(&bytes).unwrap().1, batch);
    }

    #[test]
    fn payloads_of_older_versions_still_decode() {
        let first = Reading {
            point: PointId(0),
            value: Some(Value::F64(12.5)),
            quality: Quality::Good,
            source_ts: Timestamp(1_000),
            received_ts: Timestamp(1_005),
        };
        let cases = [
            (
                v1_payload(7),
                7,
                Quality::Bad(Reason::DeviceException(2)),
                2_005,
            ),
            (
                v3_payload(9),
                9,
                Quality::Uncertain(Reason::status(0x4090_0000, "LastUsable")),
                2_000,
            ),
        ];
        for (payload, fingerprint, quality, received) in cases {
            let second = Reading {
                point: PointId(1),
                value: None,
                quality,
                source_ts: Timestamp(2_000),
                received_ts: Timestamp(received),
            };
            let (fp, readings) = decode_batch(&payload).unwrap();
            assert_eq!(fp, fingerprint);
            assert_eq!(readings, vec![first.clone(), second]);
        }
    }

    /// A spool directory holding one segment of `payloads` (built from the
    /// point table's fingerprint), opened for sink `db`.
    fn spool_with_segment(
        payloads: impl Fn(u64) -> Vec<Vec<u8>>,
    ) -> (
        tempfile::TempDir,
        crate::Spool,
        crate::RecoveryReport,
        adit_core::PointRegistry,
    ) {
        use crate::{Spool, SpoolConfig};
        let mut registry = adit_core::PointRegistry::new();
        for name in ["co", "fan"] {
            registry
                .insert(adit_core::PointMeta::plain(name, "plc", 1000))
                .unwrap();
        }
        let fp = crate::points::fingerprint(&crate::points::registry_names(&registry));
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Vec::new();
        for (seq, payload) in (1..).zip(payloads(fp)) {
            crate::frame::encode_record(seq, &payload, &mut segment);
        }
        std::fs::write(dir.path().join(format!("seg-{:020}.log", 1)), &segment).unwrap();
        let cfg = SpoolConfig::for_test(dir.path());
        let (spool, report) = Spool::open(cfg, &registry, &["db"]).unwrap();
        (dir, spool, report, registry)
    }

    #[test]
    fn a_segment_written_by_an_older_adit_still_replays() {
        let (_dir, spool, report, registry) = spool_with_segment(|fp| vec![v1_payload(fp)]);
        assert!(
            !report.found_damage() || report.ledger_missing,
            "{report:?}"
        );
        let d = spool
            .reader("db", &registry)
            .next(100, std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(d.readings.len(), 2);
        assert_eq!(
            d.readings[1].quality,
            Quality::Bad(Reason::DeviceException(2))
        );
        // And new records after it are version 3 (see the module).
        spool.append(&d.readings).unwrap();
    }

    /// What a later adit will write (version 4) replays here, after
    /// records of older versions in the same segment: the step that makes
    /// writing version 4 safe to roll back from.
    #[test]
    fn a_segment_with_older_and_packed_records_replays_in_order() {
        let packed: Vec<Reading> = (0..3)
            .map(|i| Reading {
                point: PointId(i % 2),
                value: Some(Value::I64(i64::from(i))),
                quality: Quality::Good,
                source_ts: Timestamp(3_000),
                received_ts: Timestamp(3_000 + i64::from(i)),
            })
            .collect();
        let (_dir, spool, report, registry) = spool_with_segment(|fp| {
            let mut v4 = Vec::new();
            encode_batch_packed(fp, &packed, &mut v4);
            vec![v1_payload(fp), v4]
        });
        assert_eq!(report.readings, 5, "{report:?}");
        let d = spool
            .reader("db", &registry)
            .next(100, std::time::Duration::ZERO)
            .unwrap();
        let times: Vec<i64> = d.readings.iter().map(|r| r.received_ts.0).collect();
        assert_eq!(times, vec![1_005, 2_005, 3_000, 3_001, 3_002]);
        assert_eq!(&d.readings[2..], &packed[..]);
    }

    #[test]
    fn a_protocol_status_round_trips_with_its_name_and_code() {
        let r = Reading {
            point: PointId(3),
            value: Some(Value::F64(1.0)),
            quality: Quality::Uncertain(Reason::status(0x4090_0000, "UncertainLastUsableValue")),
            source_ts: Timestamp(1),
            received_ts: Timestamp(2),
        };
        for (encode, version) in [
            (encode_batch as fn(_, _, &mut _), 3u8),
            (encode_batch_packed, 4),
        ] {
            let mut bytes = Vec::new();
            encode(1, std::slice::from_ref(&r), &mut bytes);
            assert_eq!(bytes[0], version);
            assert_eq!(decode_batch(&bytes).unwrap().1, vec![r.clone()]);
        }
    }

    proptest! {
        /// The stack-built shortcut for numbers writes what the field by
        /// field encoder does, byte for byte.
        #[test]
        fn a_number_built_at_once_is_the_reading_encoded_field_by_field(r in any_reading()) {
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            encode_reading_v3(&r, &mut general);
            if encode_number_v3(&r, &mut fast) {
                prop_assert_eq!(fast, general);
            } else {
                prop_assert!(fast.is_empty());
            }
        }

        #[test]
        fn batches_round_trip_exactly(batch in prop::collection::vec(any_reading(), 0..40), fp in any::<u64>()) {
            for encode in ENCODERS {
                let mut bytes = Vec::new();
                encode(fp, &batch, &mut bytes);
                let (fp2, back) = decode_batch(&bytes).unwrap();
                prop_assert_eq!(fp2, fp);
                prop_assert_eq!(back.len(), batch.len());
                for (a, b) in batch.iter().zip(&back) {
                    prop_assert!(same(a, b), "{:?} != {:?}", a, b);
                }
            }
        }

        #[test]
        fn any_bytes_decode_to_a_result_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), version in 0u8..6) {
            let mut bytes = bytes;
            if let Some(b) = bytes.first_mut() {
                *b = version;
            }
            let _ = decode_payload(&bytes);
        }

        #[test]
        fn the_header_count_is_the_decoded_count(batch in prop::collection::vec(any_reading(), 0..300)) {
            for encode in ENCODERS {
                let mut bytes = Vec::new();
                encode(1, &batch, &mut bytes);
                prop_assert_eq!(items_in(&bytes), batch.len() as u64);
            }
        }

        #[test]
        fn any_truncation_is_an_error_not_a_panic(batch in prop::collection::vec(any_reading(), 1..10), cut in any::<prop::sample::Index>()) {
            for encode in ENCODERS {
                let mut bytes = Vec::new();
                encode(1, &batch, &mut bytes);
                let cut = cut.index(bytes.len());
                prop_assert!(decode_batch(&bytes[..cut]).is_err());
            }
        }
    }
}
