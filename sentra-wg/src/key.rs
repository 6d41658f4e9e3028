//! 32-byte WireGuard keys.
//!
//! [`Key`] is a public key: it prints as base64, like `wg(8)`. [`PrivateKey`] and
//! [`PresharedKey`] are secrets: their `Debug` is redacted, they have no `Display`, and their
//! bytes are zeroized on drop. All three parse from base64 (44 characters, as `wg genkey`
//! prints) or hex (64 characters, as the UAPI protocol uses).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Length of every WireGuard key in bytes.
pub const KEY_LEN: usize = 32;

fn decode(s: &str, what: &'static str, echo: bool) -> Result<[u8; KEY_LEN]> {
    let s = s.trim();
    let mut out = [0u8; KEY_LEN];
    let ok = match s.len() {
        44 => {
            let mut buf = [0u8; 33];
            match STANDARD.decode_slice(s, &mut buf) {
                Ok(KEY_LEN) => {
                    out.copy_from_slice(&buf[..KEY_LEN]);
                    buf.zeroize();
                    true
                }
                _ => {
                    buf.zeroize();
                    false
                }
            }
        }
        64 => hex::decode_to_slice(s, &mut out).is_ok(),
        _ => false,
    };
    if ok {
        Ok(out)
    } else {
        out.zeroize();
        Err(Error::Parse {
            what,
            input: if echo {
                s.to_owned()
            } else {
                "<redacted>".to_owned()
            },
        })
    }
}

/// A WireGuard public key (32 bytes). `Display` prints base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    /// Parses base64 (44 chars) or hex (64 chars).
    pub fn from_base64_or_hex(s: &str) -> Result<Self> {
        decode(s, "public key", true).map(Self)
    }
    /// Standard base64 with padding, as `wg(8)` prints keys.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
    /// Lower-case hex, as the UAPI text protocol uses.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// `true` if all bytes are zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 44];
        let n = STANDARD
            .encode_slice(self.0, &mut buf)
            .expect("44 bytes hold the base64 of 32");
        f.write_str(std::str::from_utf8(&buf[..n]).expect("base64 is ASCII"))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_base64_or_hex(s)
    }
}

impl From<[u8; KEY_LEN]> for Key {
    fn from(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// `Debug` is redacted, there is no `Display`, the bytes are zeroized on drop, and
        /// equality is compared in constant time.
        #[derive(Clone)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// Wraps raw bytes (the caller should zeroize its own copy).
            pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }
            /// The raw bytes. Handle with care.
            pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
            /// Parses base64 (44 chars) or hex (64 chars). The input is never echoed in errors.
            pub fn from_base64_or_hex(s: &str) -> Result<Self> {
                decode(s, $what, false).map(Self)
            }
            /// The key as base64. This reveals the secret: only for writing it where it belongs.
            pub fn expose_base64(&self) -> String {
                STANDARD.encode(self.0)
            }
            /// `true` if all bytes are zero (for WireGuard: "no key").
            pub fn is_zero(&self) -> bool {
                self.0.iter().fold(0u8, |acc, b| acc | b) == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
        }
        impl Eq for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::from_base64_or_hex(s)
            }
        }
    };
}

secret_key!(
    /// A WireGuard private key (32 bytes).
    PrivateKey,
    "private key"
);
secret_key!(
    /// A WireGuard preshared key (32 bytes).
    PresharedKey,
    "preshared key"
);

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str = "Aj2HHAutB2U0O56jJBdkZ/xgb9pnmUPJ0IeiuACLLmI=";

    #[test]
    fn base64_and_hex_round_trip() {
        let k: Key = B64.parse().unwrap();
        assert_eq!(k.to_string(), B64);
        assert_eq!(k.to_base64(), B64);
        let h: Key = k.to_hex().parse().unwrap();
        assert_eq!(h, k);
        assert_eq!(format!("{k:?}"), format!("Key({B64})"));
    }

    #[test]
    fn rejects_bad_lengths_and_alphabet() {
        assert!("abc".parse::<Key>().is_err());
        assert!(B64[..43].parse::<Key>().is_err());
        assert!("zz".repeat(32).parse::<Key>().is_err());
        // 44 chars of base64 that decode to 33 bytes is not a key.
        assert!(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                .parse::<Key>()
                .is_err()
        );
    }

    #[test]
    fn secrets_are_redacted_and_not_echoed() {
        let k: PrivateKey = B64.parse().unwrap();
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        let p: PresharedKey = B64.parse().unwrap();
        assert_eq!(format!("{p:?}"), "PresharedKey(<redacted>)");
        let err = format!("{}", "x".repeat(44).parse::<PrivateKey>().unwrap_err());
        assert!(!err.contains("xxxx"), "{err}");
        assert_eq!(k.expose_base64(), B64);
        assert!(!k.is_zero());
        assert!(PresharedKey::from_bytes([0; 32]).is_zero());
        assert_eq!(k.clone(), k);
        assert_ne!(k, PrivateKey::from_bytes([1; 32]));
    }
}
