//! The crate's error type.

use std::fmt;

use crate::{AllowedIp, Key};

/// What a request was doing when the kernel refused it (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Resolving the `wireguard` generic-netlink family.
    ResolveFamily,
    /// `WG_CMD_GET_DEVICE` (a dump).
    GetDevice,
    /// `WG_CMD_SET_DEVICE`.
    SetDevice,
    /// An rtnetlink link or address request.
    Link,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ResolveFamily => "resolving the wireguard netlink family",
            Self::GetDevice => "reading a WireGuard device",
            Self::SetDevice => "configuring a WireGuard device",
            Self::Link => "changing a network link",
        })
    }
}

/// Everything that can go wrong in `sentra-wg`.
///
/// Kernel errno values are mapped to the specific variants below where they have a known
/// meaning for WireGuard; anything else is [`Error::Kernel`]. The `Display` text is for humans
/// and may change in any release: match on the variants (or use the helpers such as
/// [`Error::is_unavailable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel has no `wireguard` generic-netlink family: the module is not loaded and could
    /// not be auto-loaded, or the kernel has no WireGuard support.
    #[error("WireGuard is not available in this kernel (no \"wireguard\" generic netlink family)")]
    NotAvailable,
    /// The caller lacks `CAP_NET_ADMIN` (WireGuard needs it even to read).
    #[error("permission denied while {op} (CAP_NET_ADMIN is required, even to read)")]
    PermissionDenied {
        /// What was being done.
        op: Op,
    },
    /// No network device with that name or index exists (`ENODEV`).
    #[error("no such network device: {device}")]
    NoDevice {
        /// The interface name or `#ifindex`.
        device: String,
    },
    /// The device exists but is not a WireGuard device (`EOPNOTSUPP` from the family).
    #[error("{device} is not a WireGuard device")]
    NotWireguard {
        /// The interface name or `#ifindex`.
        device: String,
    },
    /// The kernel (`EINVAL`, `EBADR`, …) or this crate's own validation rejected an argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The kernel does not support something that was asked for (for example
    /// `WGALLOWEDIP_F_REMOVE_ME` before Linux 6.16).
    #[error("unsupported by this kernel: {0}")]
    Unsupported(String),
    /// A dump kept being interrupted by concurrent changes (`NLM_F_DUMP_INTR`) and was
    /// retried the given number of times without getting a consistent snapshot.
    #[error("device changed during every one of {attempts} dump attempts (NLM_F_DUMP_INTR)")]
    Interrupted {
        /// How many dumps were attempted.
        attempts: u32,
    },
    /// A multi-message SET failed part-way: the first `applied` messages were acknowledged and
    /// are in effect, the rest were not sent. Re-read the device before deciding what to do.
    #[error(
        "partially applied: {applied} of {total} SET messages took effect; failed at {}: {source}",
        failed_at.as_ref().map_or_else(|| "device attributes".to_owned(), |k| format!("peer {k}"))
    )]
    Partial {
        /// Messages acknowledged by the kernel.
        applied: usize,
        /// Messages in the whole sequence.
        total: usize,
        /// The first peer of the failing message, if it carried peers.
        failed_at: Option<Key>,
        /// Why that message failed.
        #[source]
        source: Box<Self>,
    },
    /// Two desired peers claim the same allowed IP; the kernel would silently move it to
    /// whichever comes last, so this is rejected before anything is sent.
    #[error("allowed IP {prefix} is claimed by both peer {first} and peer {second}")]
    AllowedIpConflict {
        /// The contested prefix.
        prefix: AllowedIp,
        /// One claimant.
        first: Key,
        /// The other claimant.
        second: Key,
    },
    /// A reply from the kernel (or bytes handed to the parser) could not be decoded.
    #[error("malformed netlink data: {0}")]
    Malformed(String),
    /// Text could not be parsed (a key, a prefix, an endpoint).
    #[error("cannot parse {what}: {input:?}")]
    Parse {
        /// What was expected.
        what: &'static str,
        /// The rejected text (never a secret key: those are not echoed).
        input: String,
    },
    /// The kernel returned an errno this crate has no specific variant for.
    #[error("kernel error while {op}: {source}")]
    Kernel {
        /// What was being done.
        op: Op,
        /// The errno as an I/O error (use `raw_os_error()`).
        #[source]
        source: std::io::Error,
    },
    /// The kernel sent nothing for longer than the client's reply timeout
    /// (`Client::set_reply_timeout`) while a request waited for its reply: the request or
    /// its acknowledgement was lost, or the kernel is still busy with it (deleting a device
    /// with many thousands of peers can take minutes on a slow machine). Never a hang.
    #[error(
        "no reply from the kernel within {:.1}s while {op} (request or reply lost, or the kernel is still working on it)",
        after.as_secs_f64()
    )]
    NoReply {
        /// What was being done.
        op: Op,
        /// The timeout that expired.
        after: std::time::Duration,
    },
    /// A socket operation failed.
    #[error("netlink socket I/O error")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

// errno values (Linux, all architectures this crate supports share them).
pub(crate) const ENOENT: i32 = 2;
pub(crate) const EINTR: i32 = 4;
pub(crate) const ENODEV: i32 = 19;
pub(crate) const EINVAL: i32 = 22;
pub(crate) const EPERM: i32 = 1;
pub(crate) const EACCES: i32 = 13;
pub(crate) const EOPNOTSUPP: i32 = 95;
pub(crate) const EPFNOSUPPORT: i32 = 96;
pub(crate) const EBADR: i32 = 53;
pub(crate) const ENAMETOOLONG: i32 = 36;
pub(crate) const EMSGSIZE: i32 = 90;

impl Error {
    /// Maps a positive errno returned by the kernel for `op` on `device` to a typed error.
    pub(crate) fn from_errno(errno: i32, op: Op, device: &str) -> Self {
        match errno {
            EPERM | EACCES => Self::PermissionDenied { op },
            ENODEV => Self::NoDevice {
                device: device.to_owned(),
            },
            EOPNOTSUPP if op != Op::Link => Self::NotWireguard {
                device: device.to_owned(),
            },
            ENOENT if op == Op::ResolveFamily => Self::NotAvailable,
            EINVAL | EBADR | ENAMETOOLONG | EMSGSIZE => Self::InvalidArgument(format!(
                "kernel rejected the request while {op}: {}",
                std::io::Error::from_raw_os_error(errno)
            )),
            EPFNOSUPPORT => Self::Unsupported("WireGuard protocol version".to_owned()),
            _ => Self::Kernel {
                op,
                source: std::io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// `true` if WireGuard cannot be used here at all: the kernel lacks it, or the process
    /// lacks `CAP_NET_ADMIN`. A collector can say so once and carry on without WireGuard.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NotAvailable | Self::PermissionDenied { .. })
    }

    /// `true` if the named device does not exist (or is not a WireGuard device).
    pub fn is_no_device(&self) -> bool {
        matches!(self, Self::NoDevice { .. } | Self::NotWireguard { .. })
    }

    /// The kernel errno behind this error, if there was one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } | Self::Io(source) => source.raw_os_error(),
            Self::Partial { source, .. } => source.raw_os_error(),
            Self::PermissionDenied { .. } => Some(EPERM),
            Self::NoDevice { .. } => Some(ENODEV),
            Self::NotWireguard { .. } => Some(EOPNOTSUPP),
            Self::NotAvailable => Some(ENOENT),
            Self::Interrupted { .. } => Some(EINTR),
            _ => None,
        }
    }
}
