//! Capabilities granted by the manifest, resolved when the plugin is loaded.

use std::io::Read;
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::manifest::Capabilities;

/// ABI status: the path or variable is not granted (or escapes a granted directory).
pub(crate) const E_DENIED: i32 = -1;
/// ABI status: granted, but the file or variable does not exist.
pub(crate) const E_NOT_FOUND: i32 = -2;
/// ABI status: granted, but reading failed (not a regular file, I/O error, bad UTF-8 name).
pub(crate) const E_IO: i32 = -3;

/// Most bytes one `read_file` call returns.
pub const MAX_READ: usize = 1 << 20;

#[derive(Debug)]
struct Dir {
    guest: String,
    fd: OwnedFd,
}

/// Resolved grants: open directory handles and the values of the named variables,
/// captured once at load (the plugin never sees the rest of the environment).
#[derive(Debug, Default)]
pub(crate) struct Grants {
    dirs: Vec<Dir>,
    env: Vec<(String, Option<String>)>,
}

impl Grants {
    pub(crate) fn resolve(plugin: &str, caps: &Capabilities) -> Result<Self> {
        let mut dirs = Vec::new();
        for d in &caps.dirs {
            let fd = rustix::fs::open(
                &d.host,
                rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::Capability {
                plugin: plugin.to_owned(),
                capability: format!("dir:{}", d.guest),
                message: format!("cannot open {}: {e}", d.host.display()),
            })?;
            dirs.push(Dir {
                guest: d.guest.trim_end_matches('/').to_owned(),
                fd,
            });
        }
        // Longest guest prefix first, so nested grants resolve to the most specific one.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.guest.len()));
        let env = caps
            .env
            .iter()
            .map(|n| (n.clone(), std::env::var(n).ok()))
            .collect();
        Ok(Self { dirs, env })
    }

    /// The value of granted variable `name`, or an ABI status.
    pub(crate) fn env(&self, name: &str) -> std::result::Result<&str, i32> {
        match self.env.iter().find(|(n, _)| n == name) {
            None => Err(E_DENIED),
            Some((_, None)) => Err(E_NOT_FOUND),
            Some((_, Some(v))) => Ok(v),
        }
    }

    /// Reads at most `cap` bytes of granted file `path`, or returns an ABI status.
    pub(crate) fn read(&self, path: &str, cap: usize) -> std::result::Result<Vec<u8>, i32> {
        let (dir, rel) = self.lookup(path).ok_or(E_DENIED)?;
        let file = open_beneath(&dir.fd, rel)?;
        let st = rustix::fs::fstat(&file).map_err(|_| E_IO)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            // FIFOs, devices and sockets could block the host thread or be endless.
            return Err(E_IO);
        }
        let mut out = Vec::new();
        std::fs::File::from(file)
            .take(cap.min(MAX_READ) as u64)
            .read_to_end(&mut out)
            .map_err(|_| E_IO)?;
        Ok(out)
    }

    fn lookup<'a>(&self, path: &'a str) -> Option<(&Dir, &'a str)> {
        if path.contains('\0') {
            return None;
        }
        self.dirs.iter().find_map(|d| {
            let rest = path.strip_prefix(d.guest.as_str())?;
            let rel = rest.strip_prefix('/')?;
            // Reject `..` and absolute components up front; openat2 RESOLVE_BENEATH also
            // refuses them and any symlink that leaves the directory.
            if rel.is_empty() || rel.split('/').any(|c| c == "..") {
                return None;
            }
            Some((d, rel))
        })
    }
}

#[cfg(target_os = "linux")]
fn open_beneath(dir: &OwnedFd, rel: &str) -> std::result::Result<OwnedFd, i32> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    match rustix::fs::openat2(
        dir,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOENT) => Err(E_NOT_FOUND),
        // EXDEV: the path or a symlink in it tried to leave the directory.
        Err(rustix::io::Errno::XDEV | rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
            Err(E_DENIED)
        }
        Err(rustix::io::Errno::NOSYS) => open_beneath_fallback(dir, rel, flags),
        Err(_) => Err(E_IO),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_beneath(dir: &OwnedFd, rel: &str) -> std::result::Result<OwnedFd, i32> {
    use rustix::fs::OFlags;
    open_beneath_fallback(
        dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
    )
}

/// Without openat2: walk the path one component at a time refusing every symlink.
fn open_beneath_fallback(
    dir: &OwnedFd,
    rel: &str,
    flags: rustix::fs::OFlags,
) -> std::result::Result<OwnedFd, i32> {
    use rustix::fs::{Mode, OFlags};
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(E_DENIED);
    };
    let map = |e: rustix::io::Errno| match e {
        rustix::io::Errno::NOENT => E_NOT_FOUND,
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::ACCESS => E_DENIED,
        _ => E_IO,
    };
    let mut cur: Option<OwnedFd> = None;
    for c in dirs {
        let base = cur.as_ref().unwrap_or(dir);
        let next = rustix::fs::openat(
            base,
            *c,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(map)?;
        cur = Some(next);
    }
    let base = cur.as_ref().unwrap_or(dir);
    rustix::fs::openat(base, *last, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(map)
}
