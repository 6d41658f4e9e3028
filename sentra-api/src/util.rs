//! Small helpers: encoding and request-body deserializers.

use base64::Engine as _;

/// Deserializes an unsigned integer that JSON may spell `25` or `25.0` (both are the
/// integer 25 in JSON Schema); `25.5`, negative and out-of-range values are refused.
pub(crate) fn integral<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::{Deserialize as _, de::Error as _};
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    let n = match Num::deserialize(d)? {
        Num::Int(n) => n,
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the guard admits only whole, non-negative floats up to 2^53: exact in u64"
        )]
        Num::Float(f) if f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) => {
            f as u64
        }
        Num::Float(_) => return Err(D::Error::custom("not a non-negative integer")),
    };
    T::try_from(n).map_err(|_| D::Error::custom("integer out of range"))
}

/// An optional field that, when present, must not be `null` (use with `#[serde(default)]`).
pub(crate) fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// [`integral`] for an optional field (`null` or absent is `None`).
pub(crate) fn integral_opt<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::Deserialize as _;
    #[derive(serde::Deserialize)]
    struct Wrap<T: TryFrom<u64>>(#[serde(deserialize_with = "integral")] T);
    Option::<Wrap<T>>::deserialize(d).map(|w| w.map(|w| w.0))
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
