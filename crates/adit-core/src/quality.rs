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
//! `reason_code`. Names are interned ([`StatusName`], bounded, lock-free to
//! read) so that a quality stays small and `Copy` on the hot path.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Most distinct status names interned; past it a name reads back as
/// [`UNKNOWN_STATUS`] (its code is kept). No protocol has nearly as many.
pub const MAX_STATUS_NAMES: usize = 4096;
/// The name of a status whose name could not be kept.
pub const UNKNOWN_STATUS: &str = "unknown_status";

/// An interned status name: two bytes, so that a [`Reason`] stays eight
/// bytes and a [`Quality`] twelve on the hot path (a reading is copied at
/// every stage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusName(u16);

static NAMES: [OnceLock<&'static str>; MAX_STATUS_NAMES] =
    [const { OnceLock::new() }; MAX_STATUS_NAMES];

impl StatusName {
    /// The name (lock-free).
    pub fn as_str(self) -> &'static str {
        NAMES
            .get(usize::from(self.0))
            .and_then(OnceLock::get)
            .copied()
            .unwrap_or(UNKNOWN_STATUS)
    }

    /// Interns `name`. Only ASCII letters, digits and `_ . -` up to 64
    /// bytes are kept as given; anything else, or any name past
    /// [`MAX_STATUS_NAMES`], is [`UNKNOWN_STATUS`].
    pub fn intern(name: &str) -> Self {
        static INDEX: OnceLock<Mutex<HashMap<&'static str, u16>>> = OnceLock::new();
        const UNKNOWN: StatusName = StatusName(u16::MAX);
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !plain {
            return UNKNOWN;
        }
        let mut index = INDEX
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&i) = index.get(name) {
            return StatusName(i);
        }
        let i = index.len();
        let Some(slot) = NAMES.get(i) else {
            return UNKNOWN;
        };
        let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
        let _ = slot.set(leaked);
        let i = i as u16;
        index.insert(leaked, i);
        StatusName(i)
    }
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
    Status { code: u32, name: StatusName },
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
            Reason::Status { name, .. } => name.as_str(),
        }
    }

    /// A protocol status with its code and name (interned).
    pub fn status(code: u32, name: &str) -> Self {
        Reason::Status {
            code,
            name: StatusName::intern(name),
        }
    }

    /// Extra detail carried by the reason: the Modbus exception code, or the
    /// protocol status code.
    pub fn detail(self) -> Option<u32> {
        match self {
            Reason::DeviceException(code) => Some(u32::from(code)),
            Reason::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.detail()) {
            (Reason::Status { code, name }, _) => write!(f, "{}(0x{code:08X})", name.as_str()),
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
        let r = Reason::status(0x808A_0000, "BadSensorFailure");
        assert_eq!(r.name(), "BadSensorFailure");
        assert_eq!(r.detail(), Some(0x808A_0000));
        assert_eq!(
            Quality::Bad(r).to_string(),
            "bad(BadSensorFailure(0x808A0000))"
        );
    }

    #[test]
    fn status_names_are_interned_once_and_odd_names_are_not_kept() {
        let a = StatusName::intern("UncertainLastUsableValue");
        let b = StatusName::intern(&String::from("UncertainLastUsableValue"));
        assert_eq!(a, b);
        assert!(
            std::ptr::eq(a.as_str(), b.as_str()),
            "one allocation per name"
        );
        assert_eq!(
            StatusName::intern("bad name; drop table").as_str(),
            UNKNOWN_STATUS
        );
        assert_eq!(StatusName::intern("").as_str(), UNKNOWN_STATUS);
        assert_eq!(StatusName::intern(&"x".repeat(65)).as_str(), UNKNOWN_STATUS);
    }

    #[test]
    fn qualities_stay_small_on_the_hot_path() {
        assert_eq!(std::mem::size_of::<Reason>(), 8);
        assert!(std::mem::size_of::<Quality>() <= 12);
    }
}
