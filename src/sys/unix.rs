//! The Unix control socket, done the way lldpd does it: tight umask before bind,
//! mode 0660 in a 0750 directory, and a connect-probe before touching an existing path
//! (a live agent there -> refuse; a stale socket -> unlink; a non-socket -> refuse).

use super::net::SOCK_FLAGS;
use super::SysError;
use nix::errno::Errno;
use nix::sys::socket::{self, bind, listen, AddressFamily, Backlog, SockType, UnixAddr};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chown, Gid};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct UnixListener {
    pub fd: OwnedFd,
    pub path: PathBuf,
    /// (device, inode) of the socket file we bound, so we only ever remove our own.
    ident: (u64, u64),
}

impl UnixListener {
    /// Removes the socket file if it is still the one this agent created.
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.file_type().is_socket() && (m.dev(), m.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Is an agent answering on `path`? Errors other than "nobody there" are returned.
fn probe_live(path: &Path) -> Result<bool, SysError> {
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SOCK_FLAGS, None)
        .map_err(|e| SysError::new("socket(AF_UNIX)", e))?;
    let addr = UnixAddr::new(path).map_err(|e| SysError::new(format!("{}", path.display()), e))?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        // EAGAIN: a live listener whose backlog is full.
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Ok(true),
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(SysError::new(format!("probe {}", path.display()), e)),
    }
}

pub fn listen_unix(
    path: &Path,
    backlog: u16,
    group: Option<Gid>,
) -> Result<UnixListener, SysError> {
    let shown = path.display();
    if path.as_os_str().len() > crate::limits::SOCK_PATH_MAX {
        return Err(SysError::msg(format!(
            "socket path {shown} is longer than {} bytes",
            crate::limits::SOCK_PATH_MAX
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| SysError::msg(format!("create {}: {e}", dir.display())))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
            if let Some(g) = group {
                let _ = chown(dir, None, Some(g));
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(SysError::msg(format!(
                "{shown} exists and is not a socket; refusing to touch it"
            )));
        }
        Ok(_) => {
            if probe_live(path)? {
                return Err(SysError::msg(format!(
                    "another agent is already listening on {shown}"
                )));
            }
            log::info!("removing stale socket {shown}");
            std::fs::remove_file(path)
                .map_err(|e| SysError::msg(format!("remove stale socket {shown}: {e}")))?;
        }
        Err(_) => {}
    }
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SOCK_FLAGS, None)
        .map_err(|e| SysError::new("socket(AF_UNIX)", e))?;
    let addr = UnixAddr::new(path).map_err(|e| SysError::new(format!("{shown}"), e))?;
    // Tight umask so the socket is never, even briefly, more open than 0660.
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = bind(fd.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|e| SysError::new(format!("bind {shown}"), e))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    if let Some(g) = group {
        chown(path, None, Some(g)).map_err(|e| SysError::new(format!("chgrp {shown}"), e))?;
    }
    let bl = Backlog::new(i32::from(backlog)).map_err(|e| SysError::new("backlog", e))?;
    listen(&fd, bl).map_err(|e| SysError::new(format!("listen {shown}"), e))?;
    let m =
        std::fs::symlink_metadata(path).map_err(|e| SysError::msg(format!("stat {shown}: {e}")))?;
    Ok(UnixListener {
        fd,
        path: path.to_path_buf(),
        ident: (m.dev(), m.ino()),
    })
}

/// The agent's default socket path for this user (also `tether ctl`'s default).
pub fn default_socket_path() -> PathBuf {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/tether/tether.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("tether.sock"),
        _ => PathBuf::from(format!("/tmp/tether-{uid}/tether.sock")),
    }
}

/// Logs the peer's credentials (SO_PEERCRED) at debug level.
pub fn log_peer(fd: &OwnedFd) {
    if log::log_enabled!(log::Level::Debug) {
        if let Ok(c) = socket::getsockopt(fd, socket::sockopt::PeerCredentials) {
            log::debug!(
                "unix client pid={} uid={} gid={}",
                c.pid(),
                c.uid(),
                c.gid()
            );
        }
    }
}
