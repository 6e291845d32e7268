//! Quality of a reading: Good, Uncertain(reason) or Bad(reason).
//!
//! The reasons are a closed set that maps one-to-one to what went wrong, so that
//! a dashboard, a rule or a database query can tell a broken wire from a device
//! that refused the request. Each has a stable `snake_case` name used in the
//! database and in the API; renaming one is a schema change.
//!
//! Beside the closed set, [`Reason::Status`] carries a protocol's own status
//! for the sample, as the protocol names it: an OPC UA `StatusCode` (32 bits,
//! e.g. `0x808A0000` `BadSensorFailure`, `UncertainLastUsableValue`), a
//! Sparkplug quality. Its name is stored as the reason and its code as
//! `reason_code`. Names are `&'static str` so that a quality stays `Copy` on
//! the hot path: protocol tables give static names, and names read back from
//! storage are interned ([`intern_status_name`], bounded).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

/// A protocol's own status for a sample: its 32-bit code and symbolic name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceStatus {
    pub code: u32,
    pub name: &'static str,
}

/// Most distinct status names interned; past it a name reads back as
/// [`UNKNOWN_STATUS`] (its code is kept). No protocol has nearly as many.
pub const MAX_STATUS_NAMES: usize = 4096;
/// The name of a status whose name could not be kept.
pub const UNKNOWN_STATUS: &str = "unknown_status";

/// The `&'static str` for a status name read from storage or the wire.
/// Only ASCII letters, digits and `_ . -` up to 64 bytes are kept as given;
/// anything else, or any name past [`MAX_STATUS_NAMES`], is [`UNKNOWN_STATUS`].
pub fn intern_status_name(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !plain {
        return UNKNOWN_STATUS;
    }
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(&known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_STATUS_NAMES {
        return UNKNOWN_STATUS;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Why a reading is not Good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The device could not be reached or did not answer in time.
    CommFailure,
    /// The device answered with a Modbus exception (or protocol status) code.
    DeviceException(u8),
    /// The value is outside the point's configured engineering range.
    OutOfRange,
    /// The raw value could not be turned into a number (NaN, Inf, bad encoding).
    Conversion,
    /// No fresh sample arrived within the point's staleness deadline.
    Stale,
    /// The value shown is the last one known, not a fresh sample.
    LastKnownValue,
    /// The source timestamp is implausible (before 1970, far future, too old).
    ClockInvalid,
    /// The device itself reports a sensor fault.
    SensorFailure,
    /// The protocol's own status (OPC UA `StatusCode`, Sparkplug quality):
    /// stored under its own name with its 32-bit code.
    Status(DeviceStatus),
}

impl Reason {
    /// Stable name used in storage and APIs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::CommFailure => "comm_failure",
            Reason::DeviceException(_) => "device_exception",
            Reason::OutOfRange => "out_of_range",
            Reason::Conversion => "conversion",
            Reason::Stale => "stale",
            Reason::LastKnownValue => "last_known_value",
            Reason::ClockInvalid => "clock_invalid",
            Reason::SensorFailure => "sensor_failure",
            Reason::Status(s) => s.name,
        }
    }

    /// Extra detail carried by the reason: the Modbus exception code, or the
    /// protocol status code.
    pub fn detail(self) -> Option<u32> {
        match self {
            Reason::DeviceException(code) => Some(u32::from(code)),
            Reason::Status(s) => Some(s.code),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.detail()) {
            (Reason::Status(s), _) => write!(f, "{}(0x{:08X})", s.name, s.code),
            (_, Some(code)) => write!(f, "{}({code})", self.name()),
            (_, None) => f.write_str(self.name()),
        }
    }
}

/// How much a reading can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    #[default]
    Good,
    Uncertain(Reason),
    Bad(Reason),
}

/// The class of a quality without its reason; also its stored code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QualityClass {
    Good = 0,
    Uncertain = 1,
    Bad = 2,
}

impl QualityClass {
    pub fn name(self) -> &'static str {
        match self {
            QualityClass::Good => "good",
            QualityClass::Uncertain => "uncertain",
            QualityClass::Bad => "bad",
        }
    }
}

impl Quality {
    pub fn class(self) -> QualityClass {
        match self {
            Quality::Good => QualityClass::Good,
            Quality::Uncertain(_) => QualityClass::Uncertain,
            Quality::Bad(_) => QualityClass::Bad,
        }
    }

    pub fn reason(self) -> Option<Reason> {
        match self {
            Quality::Good => None,
            Quality::Uncertain(r) | Quality::Bad(r) => Some(r),
        }
    }

    pub fn is_good(self) -> bool {
        self == Quality::Good
    }

    /// The worse of two qualities (Bad > Uncertain > Good); ties keep `self`.
    #[must_use]
    pub fn worst(self, other: Quality) -> Quality {
        if other.class() > self.class() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Good => f.write_str("good"),
            Quality::Uncertain(r) => write!(f, "uncertain({r})"),
            Quality::Bad(r) => write!(f, "bad({r})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_prefers_bad_over_uncertain_over_good() {
        let u = Quality::Uncertain(Reason::Stale);
        let b = Quality::Bad(Reason::CommFailure);
        assert_eq!(Quality::Good.worst(u), u);
        assert_eq!(u.worst(b), b);
        assert_eq!(b.worst(Quality::Good), b);
        assert_eq!(b.worst(Quality::Bad(Reason::OutOfRange)), b);
    }

    #[test]
    fn exception_code_is_shown_with_its_reason() {
        assert_eq!(
            Quality::Bad(Reason::DeviceException(2)).to_string(),
            "bad(device_exception(2))"
        );
        assert_eq!(Reason::DeviceException(2).detail(), Some(2));
    }

    #[test]
    fn a_protocol_status_keeps_its_name_and_32_bit_code() {
        let r = Reason::Status(DeviceStatus {
            code: 0x808A_0000,
            name: "BadSensorFailure",
        });
        assert_eq!(r.name(), "BadSensorFailure");
        assert_eq!(r.detail(), Some(0x808A_0000));
        assert_eq!(
            Quality::Bad(r).to_string(),
            "bad(BadSensorFailure(0x808A0000))"
        );
    }

    #[test]
    fn status_names_are_interned_once_and_odd_names_are_not_kept() {
        let a = intern_status_name("UncertainLastUsableValue");
        let b = intern_status_name(&String::from("UncertainLastUsableValue"));
        assert!(std::ptr::eq(a, b), "one allocation per name");
        assert_eq!(intern_status_name("bad name; drop table"), UNKNOWN_STATUS);
        assert_eq!(intern_status_name(""), UNKNOWN_STATUS);
        assert_eq!(intern_status_name(&"x".repeat(65)), UNKNOWN_STATUS);
    }
}
