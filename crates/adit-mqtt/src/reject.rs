//! Why a message (or part of one) could not become a good reading. Every
//! reject is counted under its name; none stops the collector.

/// A counted problem with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Larger than `max_payload_size`.
    TooLarge,
    InvalidUtf8,
    MalformedJson,
    /// A configured field (value, key) is not in the message.
    MissingField,
    /// A field holds the wrong kind of JSON (object for a number, …), or a
    /// Sparkplug metric's value does not fit its declared type.
    WrongType,
    /// NaN or infinity.
    NotANumber,
    /// A timestamp that cannot be read.
    TimestampInvalid,
    /// A readable timestamp before 2000 or after 2100 (stored, flagged
    /// `Bad(ClockInvalid)` by normalization).
    TimestampImplausible,
    /// No point of this connection is named by the topic.
    UnknownTopic,
    /// The point id the topic or payload gives is not a valid id.
    BadPointName,
    /// The point registry is full (`pipeline.max_points`).
    PointRefused,
    SparkplugDecode,
    /// Data for an alias or name its birth did not declare.
    UnknownAlias,
    /// Data from a node or device that has not been born (or died).
    NotBorn,
    SequenceGap,
    /// A death whose bdSeq is not the current birth's (arrived late).
    StaleDeath,
    /// A Sparkplug data set, template, bytes or file metric.
    UnsupportedType,
    TooManyNodes,
    /// A Sparkplug node with more devices than the host keeps.
    TooManyDevices,
    /// The point id the topic gives belongs to another device (a configured
    /// point, or another connection's): never written from here.
    PointOfAnotherDevice,
}

impl Reject {
    pub const ALL: [Reject; 20] = [
        Reject::TooLarge,
        Reject::InvalidUtf8,
        Reject::MalformedJson,
        Reject::MissingField,
        Reject::WrongType,
        Reject::NotANumber,
        Reject::TimestampInvalid,
        Reject::TimestampImplausible,
        Reject::UnknownTopic,
        Reject::BadPointName,
        Reject::PointRefused,
        Reject::SparkplugDecode,
        Reject::UnknownAlias,
        Reject::NotBorn,
        Reject::SequenceGap,
        Reject::StaleDeath,
        Reject::UnsupportedType,
        Reject::TooManyNodes,
        Reject::TooManyDevices,
        Reject::PointOfAnotherDevice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::InvalidUtf8 => "invalid_utf8",
            Reject::MalformedJson => "malformed_json",
            Reject::MissingField => "missing_field",
            Reject::WrongType => "wrong_type",
            Reject::NotANumber => "not_a_number",
            Reject::TimestampInvalid => "timestamp_invalid",
            Reject::TimestampImplausible => "timestamp_implausible",
            Reject::UnknownTopic => "unknown_topic",
            Reject::BadPointName => "bad_point_name",
            Reject::PointRefused => "point_refused",
            Reject::SparkplugDecode => "sparkplug_decode",
            Reject::UnknownAlias => "unknown_alias",
            Reject::NotBorn => "not_born",
            Reject::SequenceGap => "sequence_gap",
            Reject::StaleDeath => "stale_death",
            Reject::UnsupportedType => "unsupported_type",
            Reject::TooManyNodes => "too_many_nodes",
            Reject::TooManyDevices => "too_many_devices",
            Reject::PointOfAnotherDevice => "point_of_another_device",
        }
    }

    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}
