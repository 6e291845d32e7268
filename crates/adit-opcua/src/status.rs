//! OPC UA `StatusCode` → adit quality, pure. The severity bits decide the
//! class (Good, Uncertain, Bad; the reserved `11` is Bad as the standard
//! says); a non-good status keeps its symbolic name as the reason and its
//! full 32-bit code (info bits included) as the detail. Codes this stack
//! does not know are `Invalid` by name, never dropped.

use adit_core::{Quality, Reason};
use opcua::types::StatusCode;

/// The quality a value with `status` has.
pub fn quality_of(status: StatusCode) -> Quality {
    if status.is_good() {
        return Quality::Good;
    }
    let reason = reason_of(status);
    if status.is_uncertain() {
        Quality::Uncertain(reason)
    } else {
        Quality::Bad(reason)
    }
}

/// The reason a non-good status carries: its symbolic name and code.
pub fn reason_of(status: StatusCode) -> Reason {
    Reason::status(status.bits(), status.sub_code().name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::QualityClass;

    #[test]
    fn status_codes_map_to_classes_and_keep_their_names() {
        for (bits, class, name) in [
            (0x0000_0000, QualityClass::Good, "Good"),
            (0x0030_0000, QualityClass::Good, "GoodClamped"),
            (0x0096_0000, QualityClass::Good, "GoodLocalOverride"),
            (
                0x4090_0000,
                QualityClass::Uncertain,
                "UncertainLastUsableValue",
            ),
            (
                0x4093_0000,
                QualityClass::Uncertain,
                "UncertainSensorNotAccurate",
            ),
            (
                0x408F_0000,
                QualityClass::Uncertain,
                "UncertainNoCommunicationLastUsableValue",
            ),
            (0x808C_0000, QualityClass::Bad, "BadSensorFailure"),
            (0x8005_0000, QualityClass::Bad, "BadCommunicationError"),
            (0x8034_0000, QualityClass::Bad, "BadNodeIdUnknown"),
            (0x808A_0000, QualityClass::Bad, "BadNotConnected"),
            (0x808B_0000, QualityClass::Bad, "BadDeviceFailure"),
            (0x8031_0000, QualityClass::Bad, "BadNoCommunication"),
            (0x8032_0000, QualityClass::Bad, "BadWaitingForInitialData"),
            (0x8033_0000, QualityClass::Bad, "BadNodeIdInvalid"),
            (0x8074_0000, QualityClass::Bad, "BadTypeMismatch"),
            (0x808D_0000, QualityClass::Bad, "BadOutOfService"),
            (0x8035_0000, QualityClass::Bad, "BadAttributeIdInvalid"),
            (0x803A_0000, QualityClass::Bad, "BadNotReadable"),
            (0x8089_0000, QualityClass::Bad, "BadConfigurationError"),
            // The reserved severity 11 is bad; unknown sub-codes keep their bits.
            (0xC000_0000, QualityClass::Bad, "Invalid"),
            (0x8FFF_0000, QualityClass::Bad, "Invalid"),
        ] {
            let status = StatusCode::from(bits);
            let quality = quality_of(status);
            assert_eq!(quality.class(), class, "{bits:#010X}");
            match quality {
                Quality::Good => assert_eq!(class, QualityClass::Good),
                Quality::Uncertain(r) | Quality::Bad(r) => {
                    assert_eq!(r.name(), name, "{bits:#010X}");
                    assert_eq!(r.detail(), Some(bits), "{bits:#010X}");
                }
            }
        }
    }

    #[test]
    fn info_bits_are_kept_in_the_code_and_left_out_of_the_name() {
        // BadSensorFailure with the overflow and limit bits set.
        let bits = 0x808C_0000 | 0x0400 | 0x0080;
        let Quality::Bad(r) = quality_of(StatusCode::from(bits)) else {
            panic!("not bad")
        };
        assert_eq!(r.name(), "BadSensorFailure");
        assert_eq!(r.detail(), Some(bits));
    }
}
