use crate::proto::RejectReason;

/// Every error of `sentra-core`.
///
/// The `Display` text is for operators and logs; it never contains key material, tags or
/// the string-to-sign. Map an error to a wire reason with [`Error::reject_reason`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The envelope carries a version this build does not understand.
    #[error("unsupported envelope version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// A field of the envelope or batch is structurally wrong (length, encoding, range).
    #[error("malformed {field}: {reason}")]
    Malformed {
        /// Which field, e.g. `"nonce"` or `"samples[3].labels[0].name"`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload is larger than the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Decoding the payload would take more memory than allowed: the pre-scan
    /// ([`crate::prescan`]) estimated its decoded size before allocating anything.
    #[error(
        "payload would decode to about {estimated} bytes in memory, more than the limit of {limit} bytes"
    )]
    DecodedTooLarge {
        /// Estimated decoded size, bytes.
        estimated: usize,
        /// The limit ([`crate::prescan::MAX_DECODED_BYTES`]).
        limit: usize,
    },
    /// No key with this id is registered for this agent.
    #[error("unknown key {key_id} for agent {agent_id}")]
    UnknownKey {
        /// The agent named by the envelope (unauthenticated).
        agent_id: String,
        /// The key id named by the envelope.
        key_id: u32,
    },
    /// The key exists but is outside its validity window at verification time.
    #[error("key {key_id} of agent {agent_id} is not valid at {at_ms} ms")]
    KeyNotValid {
        /// The agent.
        agent_id: String,
        /// The key id.
        key_id: u32,
        /// Verification time, Unix milliseconds.
        at_ms: i64,
    },
    /// The HMAC tag does not match: forged, corrupted or signed with another key.
    #[error("signature does not verify")]
    BadTag,
    /// The envelope's creation time is too far from the verifier's clock.
    #[error("clock skew of {skew_ms} ms exceeds the allowed {limit_ms} ms")]
    ClockSkew {
        /// `created - now`, in milliseconds (negative: the batch is from the past).
        skew_ms: i64,
        /// Allowed absolute skew.
        limit_ms: u64,
    },
    /// The payload bytes are not valid protobuf for the expected message. The source is the
    /// protobuf decoder's error, boxed so that its crate's version is not part of this API.
    #[error("payload does not decode: {0}")]
    Decode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The decoded payload disagrees with the authenticated envelope header.
    #[error("payload {field} does not match the envelope")]
    HeaderMismatch {
        /// The field that differs (`"agent_id"` or `"seq"`).
        field: &'static str,
    },
    /// A duration (command line or configuration) that [`parse_duration`](crate::parse_duration)
    /// does not accept.
    #[error("{input:?} is not a duration: {reason} (use e.g. 500ms, 10s, 5m, 1h 30m, 2d)")]
    InvalidDuration {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn malformed(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn decode(e: prost::DecodeError) -> Self {
        Self::Decode(Box::new(e))
    }

    /// Prefixes the field path of a [`Error::Malformed`] error (`"labels[0]"` + `"name"`).
    pub(crate) fn within(self, parent: &str) -> Self {
        match self {
            Self::Malformed { field, reason } => Self::Malformed {
                field: format!("{parent}.{field}"),
                reason,
            },
            other => other,
        }
    }

    /// The wire reason code a server should put in its rejecting `Ack`.
    ///
    /// Unknown agents, unknown keys, invalid keys and bad tags all map to
    /// [`RejectReason::Unauthenticated`], so a client cannot enumerate agents or keys.
    #[must_use]
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            Self::UnsupportedVersion { .. } => RejectReason::UnsupportedVersion,
            Self::Malformed { .. } | Self::Decode(_) | Self::InvalidDuration { .. } => {
                RejectReason::Malformed
            }
            Self::TooLarge { .. } | Self::DecodedTooLarge { .. } => RejectReason::TooLarge,
            Self::UnknownKey { .. } | Self::KeyNotValid { .. } | Self::BadTag => {
                RejectReason::Unauthenticated
            }
            Self::ClockSkew { .. } => RejectReason::ClockSkew,
            Self::HeaderMismatch { .. } => RejectReason::InvalidBatch,
        }
    }
}
