//! Quality of a reading: Good, Uncertain(reason) or Bad(reason).
//!
//! The reasons are a closed set that maps one-to-one to what went wrong, so that
//! a dashboard, a rule or a database query can tell a broken wire from a device
//! that refused the request. Each has a stable `snake_case` name used in the
//! database and in the API; renaming one is a schema change.

use std::fmt;

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
        }
    }

    /// Extra detail carried by the reason (the exception code), if any.
    pub fn detail(self) -> Option<u8> {
        match self {
            Reason::DeviceException(code) => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail() {
            Some(code) => write!(f, "{}({code})", self.name()),
            None => f.write_str(self.name()),
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
}
