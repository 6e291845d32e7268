//! Record framing on disk. Pure.
//!
//! A record is a 20-byte header followed by its payload:
//!
//! ```text
//! magic u32 LE | len u32 LE | seq u64 LE | crc32c u32 LE | payload (len bytes)
//! ```
//!
//! The CRC32C covers `len`, `seq` and the payload, so a flipped bit anywhere
//! but in the magic is detected, and a flipped magic is detected by the scan.
//! The magic lets recovery find the next record after a corrupt one.
//!
//! Sequence number 0 is never appended: a record with `seq == 0` is a
//! *tombstone* that recovery wrote over a corrupt region, in place, so that
//! the region is skipped from then on without rewriting the segment (which
//! would need free space). Its payload is whatever garbage was there; its CRC
//! makes it a valid record like any other.

/// Marks the start of every record.
pub const MAGIC: u32 = 0xAD17_5B01;
pub const HEADER_LEN: usize = 20;
/// Largest payload accepted (a sanity bound for corrupt length fields).
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

fn crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&len.to_le_bytes());
    c = crc32c::crc32c_append(c, &seq.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Appends one framed record to `out`.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    out.extend_from_slice(payload);
    seal_record(seq, &mut out[start..]);
}

/// Writes the header of `record`, whose payload was encoded in place after
/// [`HEADER_LEN`] bytes of room (so the payload is never copied to frame
/// it). `record` is the header's room and the payload.
pub fn seal_record(seq: u64, record: &mut [u8]) {
    debug_assert!(record.len() >= HEADER_LEN, "no room for the header");
    let Some((header, payload)) = record.split_at_mut_checked(HEADER_LEN) else {
        return;
    };
    let len = payload.len() as u32;
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..20].copy_from_slice(&crc(len, seq, payload).to_le_bytes());
}

/// The header that turns `region` (at least [`HEADER_LEN`] bytes of a
/// corrupt region) into a tombstone: written over the region's first bytes,
/// the rest stays as its payload.
pub fn tombstone_header(region: &[u8]) -> Option<[u8; HEADER_LEN]> {
    let payload = region.get(HEADER_LEN..)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)?;
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&0u64.to_le_bytes());
    h[16..20].copy_from_slice(&crc(len, 0, payload).to_le_bytes());
    Some(h)
}

/// What is at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, valid record and its total length on disk.
    Record {
        seq: u64,
        payload: &'a [u8],
        total: usize,
    },
    /// Too few bytes for a whole record: a torn tail if nothing follows.
    Incomplete,
    /// Not a valid record here (bad magic, impossible length, CRC mismatch).
    Corrupt,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Parses the record at the start of `bytes`.
pub fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    if bytes.len() < HEADER_LEN {
        return if bytes.len() >= 4 && u32_at(bytes, 0) != MAGIC {
            Parsed::Corrupt
        } else {
            Parsed::Incomplete
        };
    }
    if u32_at(bytes, 0) != MAGIC {
        return Parsed::Corrupt;
    }
    let len = u32_at(bytes, 4);
    if len > MAX_PAYLOAD {
        return Parsed::Corrupt;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[8..16]);
    let seq = u64::from_le_bytes(seq);
    let stored_crc = u32_at(bytes, 16);
    let total = HEADER_LEN + len as usize;
    if bytes.len() < total {
        return Parsed::Incomplete;
    }
    let payload = &bytes[HEADER_LEN..total];
    if crc(len, seq, payload) != stored_crc {
        return Parsed::Corrupt;
    }
    Parsed::Record {
        seq,
        payload,
        total,
    }
}

/// The offset of the next place in `bytes` (after position 0) where a valid
/// record starts, if any.
pub fn resync(bytes: &[u8]) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    (1..bytes.len().saturating_sub(3)).find(|&i| {
        bytes[i..i + 4] == magic && matches!(parse_record(&bytes[i..]), Parsed::Record { .. })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_record(seq, payload, &mut v);
        v
    }

    #[test]
    fn a_record_sealed_in_place_is_the_record_framed_from_its_payload() {
        for payload in [&b""[..], b"abc", &[0xAB; 300]] {
            // The framing as written before records were sealed in place.
            let len = payload.len() as u32;
            let mut expected = Vec::new();
            expected.extend_from_slice(&MAGIC.to_le_bytes());
            expected.extend_from_slice(&len.to_le_bytes());
            expected.extend_from_slice(&42u64.to_le_bytes());
            expected.extend_from_slice(&crc(len, 42, payload).to_le_bytes());
            expected.extend_from_slice(payload);
            let mut framed = b"kept".to_vec();
            encode_record(42, payload, &mut framed);
            assert_eq!(&framed[..4], b"kept");
            assert_eq!(&framed[4..], &expected[..]);
            let mut in_place = vec![0xFF; HEADER_LEN];
            in_place.extend_from_slice(payload);
            seal_record(42, &mut in_place);
            assert_eq!(in_place, expected);
        }
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = framed(7, b"hello");
        assert_eq!(
            parse_record(&bytes),
            Parsed::Record {
                seq: 7,
                payload: b"hello",
                total: 25
            }
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = framed(7, b"hello world");
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(parse_record(&b), Parsed::Record { .. }),
                "bit {bit} flipped unnoticed"
            );
        }
    }

    #[test]
    fn truncation_is_incomplete_not_corrupt() {
        let bytes = framed(7, b"hello world");
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_record(&bytes[..cut]),
                Parsed::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_tombstone_makes_a_corrupt_region_one_valid_record_of_sequence_zero() {
        let mut region = vec![0xABu8; 64];
        let header = tombstone_header(&region).unwrap();
        region[..HEADER_LEN].copy_from_slice(&header);
        assert!(matches!(
            parse_record(&region),
            Parsed::Record {
                seq: 0,
                total: 64,
                ..
            }
        ));
        assert_eq!(
            tombstone_header(&[0u8; 19]),
            None,
            "too short to hold a header"
        );
    }

    #[test]
    fn resync_finds_the_next_record_after_garbage() {
        let mut bytes = b"garbage!".to_vec();
        bytes.extend(framed(9, b"x"));
        assert_eq!(resync(&bytes), Some(8));
        assert_eq!(resync(b"nothing valid here at all"), None);
    }
}
