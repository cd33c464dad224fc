//! The Unix sockets, done the way lldpd does it: tight umask before bind, mode 0660 in a
//! 0750 directory, and a connect-probe before touching an existing path (a live agent
//! there -> refuse; a stale socket -> unlink; a non-socket -> refuse). The same rules for
//! the control socket (stream) and the publish socket (datagram, `--publish`), whose
//! datagrams are read here with the sender's credentials (SO_PASSCRED). The control
//! socket's probe, bind and listen happen under `PATH.lock` (flock(2), removed once bound), so two
//! agents starting at once cannot both find the path stale and both bind it: the second
//! finds the lock held, or, once it is free, the first agent's socket live.

use super::net::SOCK_FLAGS;
use super::SysError;
use crate::limits::SOCK_PATH_MAX;
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::libc;
use nix::sys::socket::{
    self, bind, listen, setsockopt, sockopt, AddressFamily, Backlog, SockType, UnixAddr,
};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chown, Gid};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A socket file this agent bound: the control listener, or the publish socket.
pub struct UnixListener {
    pub fd: OwnedFd,
    pub path: PathBuf,
    /// (device, inode) of the socket file we bound, so we only ever remove our own.
    ident: (u64, u64),
    /// The outermost directory this bind created for the socket, if any.
    made_dir: Option<PathBuf>,
}

/// An exclusive flock(2) on `PATH.lock` (created 0600 if missing), held by its open fd
/// from before the stale-socket probe to after the bind; dropped, its file is removed
/// (the kernel drops the lock with the fd, after a SIGKILL too: a file left then is
/// taken again by the next agent). Holding no fd afterwards, it costs none of
/// RLIMIT_NOFILE.
struct PathLock {
    fd: OwnedFd,
    path: PathBuf,
}

impl PathLock {
    /// Takes the lock of socket `path` without waiting: held, it means another agent is
    /// starting there. A lock file unlinked by its holder between our open and our flock
    /// is not the path's any more: opened again.
    fn take(path: &Path) -> Result<PathLock, SysError> {
        let mut name = path.as_os_str().to_os_string();
        name.push(".lock");
        let lock = PathBuf::from(name);
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let what = || format!("lock {}", lock.display());
        for _ in 0..8 {
            let fd = open(lock.as_path(), flags, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| SysError::new(what(), e))?;
            // SAFETY: flock(2) on an fd this function owns; no memory is passed.
            let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            match Errno::result(r) {
                Ok(_) => {}
                Err(Errno::EWOULDBLOCK) => {
                    return Err(SysError::msg(format!(
                        "another agent is starting on {} (it holds {})",
                        path.display(),
                        lock.display()
                    )));
                }
                Err(e) => return Err(SysError::new(what(), e)),
            }
            let held = PathLock {
                fd,
                path: lock.clone(),
            };
            if held.is_at_path() {
                return Ok(held);
            }
        }
        Err(SysError::new(what(), Errno::EAGAIN))
    }

    /// Is the locked file still the one at the lock's path?
    fn is_at_path(&self) -> bool {
        let Ok(ours) = nix::sys::stat::fstat(&self.fd) else {
            return false;
        };
        std::fs::symlink_metadata(self.path.as_path())
            .is_ok_and(|m| (m.dev(), m.ino()) == (ours.st_dev, ours.st_ino))
    }
}

impl Drop for PathLock {
    /// Removes the lock file (still held: an agent that opened it meanwhile finds it gone
    /// once it gets the lock, and opens the path again).
    fn drop(&mut self) {
        if self.is_at_path() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
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

    /// After a start-up that failed: the socket file and the directories made for it (those
    /// left empty), so a failed start leaves nothing behind.
    pub fn undo(&self) {
        self.remove();
        remove_made_dirs(&self.path, self.made_dir.as_deref());
    }

    /// Is `path` this socket's file, by whatever name (`a/../t.sock`, a symlink)?
    pub fn is_at(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == self.ident)
    }
}

/// Is an agent answering on `path`? Errors other than "nobody there" are returned.
/// `ty` is the type of socket we are about to bind there.
fn probe_live(path: &Path, ty: SockType) -> Result<bool, SysError> {
    let fd = socket::socket(AddressFamily::Unix, ty, SOCK_FLAGS, None)
        .map_err(|e| SysError::new(format!("socket {}", path.display()), e))?;
    let addr = UnixAddr::new(path).map_err(|e| SysError::new(format!("{}", path.display()), e))?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        // EAGAIN: a live listener whose backlog is full. EPROTOTYPE: a live socket of the
        // other type (a stale file of any type is ECONNREFUSED).
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EPROTOTYPE) => Ok(true),
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(SysError::new(format!("probe {}", path.display()), e)),
    }
}

/// The control socket: a stream listener at `path`.
pub fn listen_unix(
    path: &Path,
    backlog: u16,
    group: Option<Gid>,
) -> Result<UnixListener, SysError> {
    let bl = Backlog::new(i32::from(backlog)).map_err(|e| SysError::new("backlog", e))?;
    bind_path(path, Kind::Listener(bl), group)
}

/// The publish socket (`--publish`): a datagram socket at `path` that receives the
/// sender's pid and uid with every datagram (SO_PASSCRED).
pub fn bind_publish(path: &Path, group: Option<Gid>) -> Result<UnixListener, SysError> {
    let sock = bind_path(path, Kind::Datagram, group)?;
    if let Err(e) = setsockopt(&sock.fd, sockopt::PassCred, &true) {
        sock.remove();
        return Err(SysError::new(format!("SO_PASSCRED {}", path.display()), e));
    }
    Ok(sock)
}

/// `SO_PASSRIGHTS` (Linux 6.16, asm-generic value: every target in `.cargo/config.toml`).
const SO_PASSRIGHTS: libc::c_int = 83;

/// Refuses file descriptors on this socket (and on connections accepted from it): a
/// sender's SCM_RIGHTS then fails with EPERM. The agent has no use for fds, and closing
/// one it was sent can hold the loop (a lingering socket, or one queued inside a passed
/// Unix socket), which [`close_passed_fd`] cannot always prevent. Older kernels
/// (ENOPROTOOPT) keep the old way: fds arrive and are closed.
fn refuse_fds(fd: BorrowedFd<'_>) {
    let _ = super::net::set_int(fd, libc::SOL_SOCKET, SO_PASSRIGHTS, 0);
}

/// The directories between `made` (the outermost one a bind created) and `path`'s own, from
/// the innermost out, each removed if empty.
fn remove_made_dirs(path: &Path, made: Option<&Path>) {
    let Some(made) = made else { return };
    for dir in path.ancestors().skip(1) {
        if std::fs::remove_dir(dir).is_err() || dir.as_os_str() == made.as_os_str() {
            return;
        }
    }
}

/// What [`bind_path`] makes at a path: the control socket, listening with its backlog, or
/// the publish socket.
#[derive(Clone, Copy)]
enum Kind {
    Listener(Backlog),
    Datagram,
}

impl Kind {
    fn ty(self) -> SockType {
        match self {
            Kind::Listener(_) => SockType::Stream,
            Kind::Datagram => SockType::Datagram,
        }
    }
}

/// Binds a Unix socket of `kind` at `path` with the rules in the module doc. A directory
/// it made for the socket is removed again if the bind then fails.
fn bind_path(path: &Path, kind: Kind, group: Option<Gid>) -> Result<UnixListener, SysError> {
    let shown = path.display();
    if path.as_os_str().len() > crate::limits::SOCK_PATH_MAX {
        return Err(SysError::msg(format!(
            "socket path {shown} is longer than {} bytes",
            crate::limits::SOCK_PATH_MAX
        )));
    }
    // Before creating a missing directory (a dangling symlink by its name would fail that
    // with a less telling EEXIST), and again after (someone may have made it meanwhile).
    check_fallback_dir(path).map_err(SysError::msg)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let missing = |a: &&Path| !a.as_os_str().is_empty() && !a.exists();
    let made_dir = dir.and_then(|d| d.ancestors().take_while(missing).last());
    let made_dir = made_dir.map(Path::to_path_buf);
    let bound = bind_in(path, kind, group, made_dir.clone());
    bound.inspect_err(|_| remove_made_dirs(path, made_dir.as_deref()))
}

/// [`bind_path`] past its first check; `made_dir`: the outermost missing directory, which
/// it creates (with those inside it).
fn bind_in(
    path: &Path,
    kind: Kind,
    group: Option<Gid>,
    made_dir: Option<PathBuf>,
) -> Result<UnixListener, SysError> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|_| made_dir.is_some()) {
        // Those around it as `mkdir -p` makes them (0755 under umask 022): 0750 and the
        // agent's group, they would keep `--socket-group`'s members out. Its own, 0750.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| SysError::msg(format!("create {}: {e}", dir.display())))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
        if let Some(g) = group {
            let _ = chown(dir, None, Some(g));
        }
    }
    check_fallback_dir(path).map_err(SysError::msg)?;
    // The control socket's lock only: agents sharing a publish path share the control
    // path beside it (the default), and each lock costs a start-up fd (RLIMIT_NOFILE).
    let lock = match kind {
        Kind::Listener(_) => Some(PathLock::take(path)?),
        Kind::Datagram => None,
    };
    let bound = bind_locked(path, kind);
    drop(lock);
    let (fd, ident) = bound?;
    let sock = UnixListener {
        fd,
        path: path.to_path_buf(),
        ident,
        made_dir,
    };
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    if let Some(g) = group {
        if let Err(e) = chown(path, None, Some(g)) {
            sock.remove();
            return Err(SysError::new(format!("chgrp {shown}"), e));
        }
    }
    Ok(sock)
}

/// [`bind_in`] under the path's lock: a stale socket there removed, ours bound (umask
/// 0117) and, a listener, listening. The fd and the socket file's (device, inode). Listening
/// under the lock too: a socket bound and not yet listening refuses a connect as a stale one
/// does, and an agent that took the lock in between unlinked the first one's fresh socket
/// (seen under qemu-user: one agent up, its path gone).
fn bind_locked(path: &Path, kind: Kind) -> Result<(OwnedFd, (u64, u64)), SysError> {
    let ty = kind.ty();
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(SysError::msg(format!(
                "{shown} exists and is not a socket; refusing to touch it"
            )));
        }
        Ok(_) => {
            if probe_live(path, ty)? {
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
    let fd = socket::socket(AddressFamily::Unix, ty, SOCK_FLAGS, None)
        .map_err(|e| SysError::new(format!("socket {shown}"), e))?;
    refuse_fds(fd.as_fd());
    super::net::apply_buf_sizes(fd.as_fd()).map_err(|(what, e)| SysError::new(what, e))?;
    let addr = UnixAddr::new(path).map_err(|e| SysError::new(format!("{shown}"), e))?;
    // Tight umask so the socket is never, even briefly, more open than 0660.
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = bind(fd.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|e| SysError::new(format!("bind {shown}"), e))?;
    if let Kind::Listener(bl) = kind {
        if let Err(e) = listen(&fd, bl) {
            let _ = std::fs::remove_file(path);
            return Err(SysError::new(format!("listen {shown}"), e));
        }
    }
    let m =
        std::fs::symlink_metadata(path).map_err(|e| SysError::msg(format!("stat {shown}: {e}")))?;
    Ok((fd, (m.dev(), m.ino())))
}

/// Whether a socket path can be shown as it is (in the ready line, the log, systemd's
/// STATUS= and SOCKETS): UTF-8 that [`super::shows_as_is`], and no white space (Unicode's,
/// as `str::split_whitespace` knows it): the path is one field of the space-separated
/// ready line (`unix=PATH beacon=... publish=PATH`), which scripts and tests split.
pub fn shows_cleanly(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|s| super::shows_as_is(s) && !s.contains(char::is_whitespace))
}

/// Where the system's agent (root's, the packaged unit's) has its socket.
pub const SYSTEM_SOCKET: &str = "/run/tether/tether.sock";

/// The agent's default socket path for this user.
pub fn default_socket_path() -> PathBuf {
    default_socket_path_why().0
}

/// `tether ctl`'s default socket: this user's agent's ([`default_socket_path`]), or, when
/// there is none, the system agent's ([`SYSTEM_SOCKET`], which a member of its group may
/// use: on a board that is the agent to talk to).
pub fn ctl_socket_path() -> PathBuf {
    ctl_socket_choice(
        default_socket_path(),
        |p| !matches!(p.symlink_metadata(), Err(e) if e.kind() == std::io::ErrorKind::NotFound),
    )
}

/// [`ctl_socket_path`] given this user's default and whether a path is there (a path that
/// cannot be looked at, in a directory this user may not enter, is: connecting then says
/// why, permission denied).
fn ctl_socket_choice(own: PathBuf, there: impl Fn(&Path) -> bool) -> PathBuf {
    let system = Path::new(SYSTEM_SOCKET);
    if own == system || there(&own) || !there(system) {
        own
    } else {
        system.into()
    }
}

/// Where the agent's default socket path comes from (for its warning and its errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketFrom {
    /// root's: [`SYSTEM_SOCKET`].
    System,
    /// This user's `$XDG_RUNTIME_DIR`.
    RuntimeDir,
    /// `/tmp/tether-UID`, and why a set `$XDG_RUNTIME_DIR` was passed over, if it was.
    Fallback(Option<&'static str>),
}

/// [`default_socket_path`], and where it comes from.
pub fn default_socket_path_why() -> (PathBuf, SocketFrom) {
    default_socket_path_for(
        nix::unistd::getuid(),
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
    )
}

/// [`default_socket_path_why`] for `uid` and this `XDG_RUNTIME_DIR`: a runtime directory
/// that is not absolute, or that would make a path over [`SOCK_PATH_MAX`] bytes or one
/// that does not [`shows_cleanly`], is passed over.
fn default_socket_path_for(
    uid: nix::unistd::Uid,
    xdg: Option<&std::ffi::OsStr>,
) -> (PathBuf, SocketFrom) {
    if uid.is_root() {
        return (PathBuf::from(SYSTEM_SOCKET), SocketFrom::System);
    }
    let why = match xdg.filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => {
            let p = Path::new(d).join("tether.sock");
            if !p.is_absolute() {
                Some("not an absolute path")
            } else if p.as_os_str().len() > SOCK_PATH_MAX {
                Some(crate::limit_text!(
                    "tether.sock in it would be over ",
                    { SOCK_PATH_MAX },
                    " bytes"
                ))
            } else if !shows_cleanly(&p) {
                Some("not UTF-8, or a space or control character")
            } else {
                return (p, SocketFrom::RuntimeDir);
            }
        }
    };
    (
        fallback_dir(uid).join("tether.sock"),
        SocketFrom::Fallback(why),
    )
}

/// `/tmp/tether-UID`: the directory of a user's default socket without a usable
/// `$XDG_RUNTIME_DIR`.
fn fallback_dir(uid: nix::unistd::Uid) -> PathBuf {
    PathBuf::from(format!("/tmp/tether-{uid}"))
}

/// When `sock` is in this user's `/tmp/tether-UID`: is that directory this user's own?
/// It is made in a directory everyone may write to, so another user could have made it
/// first (or a symlink by that name), and would then hold the socket's path: replace the
/// agent's socket with one of theirs and read what `tether ctl` sends. As tmux and
/// ssh-agent do, it is used only when it is a directory (not a symlink) that this user
/// owns and nobody else may write in. Any other path, and a directory not there (yet), is
/// fine here.
pub fn check_fallback_dir(sock: &Path) -> Result<(), String> {
    let uid = nix::unistd::getuid();
    let Some(dir) = sock.parent().filter(|d| *d == fallback_dir(uid)) else {
        return Ok(());
    };
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    let why = if !m.file_type().is_dir() {
        "is not a directory".to_string()
    } else if m.uid() != uid.as_raw() {
        format!("belongs to uid {}, not {uid}", m.uid())
    } else if m.mode() & 0o022 != 0 {
        format!("may be written by others (mode {:o})", m.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(format!(
        "{} {why}: another user could take the socket's place (remove it, or pass --socket)",
        dir.display()
    ))
}

/// The innermost directory above the socket at `sock` that the members of group `g` may
/// not pass through (its mode lets neither others nor, where `g` is its group, the group
/// search it), with its mode: they could not reach the socket (`--socket-group`). Mode
/// bits only: an ACL or a member that owns the directory can still let them in; and of a
/// relative path, only the directories it names.
pub fn closed_to_group(sock: &Path, g: Gid) -> Option<(&Path, u32)> {
    closed_dir(sock, |_, m| {
        m.st_mode & 0o001 != 0 || (m.st_gid == g.as_raw() && m.st_mode & 0o010 != 0)
    })
    .map(|(d, m)| (d, m.st_mode & 0o7777))
}

/// What keeps this user from the socket at `sock` (`tether ctl`'s "Permission denied"):
/// the innermost directory above it that this user may not search, else the socket itself
/// if this user may not write to it, with its mode and group. By access(2), so ACLs,
/// supplementary groups and root count as the kernel counts them.
pub fn closed_to_me(sock: &Path) -> Option<(&Path, u32, u32)> {
    use nix::unistd::{access, AccessFlags};
    let (p, m) = closed_dir(sock, |d, _| access(d, AccessFlags::X_OK).is_ok()).or_else(|| {
        let m = nix::sys::stat::stat(sock).ok()?;
        access(sock, AccessFlags::W_OK)
            .is_err()
            .then_some((sock, m))
    })?;
    Some((p, m.st_mode & 0o7777, m.st_gid))
}

/// The name of group `gid` (getgrgid_r: /etc/group, or NSS where the libc has it), else the
/// number.
pub fn group_name(gid: u32) -> String {
    use nix::libc;
    let mut buf = [0 as libc::c_char; 1024];
    // SAFETY: all-zero is a valid `group` (null pointers, gid 0): getgrgid_r fills it in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    // SAFETY: `grp` and `buf` are valid for writes of their sizes and outlive the call;
    // on success `found` points to `grp`, whose name points into `buf`.
    let r = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r == 0 && !found.is_null() && !grp.gr_name.is_null() {
        // SAFETY: a NUL-terminated string in `buf`, which is still alive.
        let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
        return name.to_string_lossy().into_owned();
    }
    gid.to_string()
}

/// The innermost directory above `sock` that `open` refuses (one that cannot be stat'ed is
/// passed over: a directory above it is the one closed), with its stat.
fn closed_dir(
    sock: &Path,
    open: impl Fn(&Path, &nix::sys::stat::FileStat) -> bool,
) -> Option<(&Path, nix::sys::stat::FileStat)> {
    sock.ancestors().skip(1).find_map(|d| {
        let m = nix::sys::stat::stat(d).ok()?;
        (!open(d, &m)).then_some((d, m))
    })
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

/// One datagram read by [`recv_dgram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dgram {
    /// Bytes stored in the caller's buffer.
    pub len: usize,
    /// The datagram was larger than the buffer (the rest is lost: MSG_TRUNC).
    pub truncated: bool,
    /// The sender's (pid, uid), from SCM_CREDENTIALS (SO_PASSCRED).
    pub cred: Option<(i32, u32)>,
}

/// The most file descriptors one message can carry (Linux's `SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;
/// Control buffer: SCM_CREDENTIALS and SCM_RIGHTS with [`SCM_MAX_FD`] fds, each
/// `CMSG_SPACE` (on 64-bit targets a 16-byte header, the payload rounded up to 8; less on
/// 32-bit ARM: checked below for the target built), aligned for `cmsghdr`.
/// Every fd a sender passes must fit: those that do not are dropped by the kernel itself,
/// closed in the agent's thread where [`close_passed_fd`] cannot defuse them.
const CMSG_BUF: usize = (16 + 16) + (16 + (SCM_MAX_FD * 4).next_multiple_of(8));
// SAFETY: CMSG_SPACE only computes a size.
const _: () = assert!(
    unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32)
            + libc::CMSG_SPACE((SCM_MAX_FD * std::mem::size_of::<libc::c_int>()) as u32)
    } as usize
        <= CMSG_BUF
);
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF]);

/// Closes a file descriptor a sender passed along (SCM_RIGHTS). A socket with SO_LINGER
/// set whose data cannot leave (a TCP peer that does not read) would hold close(2) for
/// the linger time, unbounded and deaf to signals, and with it the whole loop: linger
/// is turned off first, so the kernel finishes that socket in the background.
///
/// # Safety
/// `raw` is an open fd this process owns and nobody else uses.
unsafe fn close_passed_fd(raw: libc::c_int) {
    // SAFETY: `raw` is ours to close (the caller's contract).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let off = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    // Not a socket (ENOTSOCK), or one without SO_LINGER: nothing changes.
    let _ = setsockopt(&fd, sockopt::Linger, &off);
}

/// Reads one datagram into `buf` with its sender's credentials, without allocating.
/// Ok(None) when none is waiting. File descriptors a sender passed (SCM_RIGHTS) are
/// closed ([`close_passed_fd`]).
pub fn recv_dgram(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Option<Dgram>, Errno> {
    let mut cbuf = CmsgBuf([0; CMSG_BUF]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    loop {
        // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.0.as_mut_ptr().cast();
        mh.msg_controllen = cbuf.0.len() as _;
        let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
        // SAFETY: `iov` points into `buf` and `mh.msg_control` into `cbuf`, both valid for
        // the lengths given and alive for the call.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut mh, flags) };
        match Errno::result(r) {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
            Ok(n) => {
                let mut d = Dgram {
                    len: (n as usize).min(buf.len()),
                    truncated: mh.msg_flags & libc::MSG_TRUNC != 0,
                    cred: None,
                };
                // SAFETY: `mh` is the header recvmsg just filled; the CMSG_* walk stays
                // within msg_controllen, and each payload is read unaligned.
                unsafe {
                    let mut c = libc::CMSG_FIRSTHDR(&mh);
                    while !c.is_null() {
                        let data = libc::CMSG_DATA(c);
                        let len =
                            ((*c).cmsg_len as usize).saturating_sub(data as usize - c as usize);
                        match ((*c).cmsg_level, (*c).cmsg_type) {
                            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                                if len >= std::mem::size_of::<libc::ucred>() =>
                            {
                                let u = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                                d.cred = Some((u.pid, u.uid));
                            }
                            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                                let k = len / std::mem::size_of::<libc::c_int>();
                                for i in 0..k {
                                    let p = data.cast::<libc::c_int>().add(i);
                                    close_passed_fd(std::ptr::read_unaligned(p));
                                }
                            }
                            _ => {}
                        }
                        c = libc::CMSG_NXTHDR(&mh, c);
                    }
                }
                return Ok(Some(d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Uid;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn clean_paths_are_utf8_without_control_characters_or_white_space() {
        for ok in [
            "/run/tether/t.sock",
            "/tmp/k\u{fc}che.sock",
            "/tmp/a\"b\\c",
            "/tmp/a_b-c=d,e",
        ] {
            assert!(shows_cleanly(Path::new(ok)), "{ok:?}");
        }
        for bad in [
            "/tmp/a\nb",
            "/tmp/\u{1b}[2J",
            "/tmp/\u{7f}",
            "/tmp/e\u{9b}2J",
            "/tmp/\u{85}",
            "/tmp/my dir/t.sock",
            "/tmp/\u{a0}",
            "/tmp/a\u{2003}b",
            "/tmp/a\u{3000}b",
        ] {
            assert!(!shows_cleanly(Path::new(bad)), "{bad:?}");
        }
        assert!(!shows_cleanly(Path::new(OsStr::from_bytes(
            b"/tmp/k\xfcche"
        ))));
    }

    #[test]
    fn ctl_falls_back_to_the_system_agent_only_when_the_user_has_none() {
        let own = PathBuf::from("/run/user/1000/tether.sock");
        let system = Path::new(SYSTEM_SOCKET);
        let with = |present: &'static [&str]| {
            ctl_socket_choice(own.clone(), move |p| {
                present.iter().any(|q| Path::new(q) == p)
            })
        };
        assert_eq!(
            with(&[]),
            own,
            "neither: the user's own is named in the error"
        );
        assert_eq!(with(&[SYSTEM_SOCKET]), system);
        assert_eq!(with(&["/run/user/1000/tether.sock", SYSTEM_SOCKET]), own);
        assert_eq!(with(&["/run/user/1000/tether.sock"]), own);
        assert_eq!(ctl_socket_choice(system.into(), |_| false), system);
    }

    #[test]
    fn the_runtime_directory_is_used_only_when_the_path_can_be_shown_and_bound() {
        let user = Uid::from_raw(1000);
        let xdg = |d: &[u8]| default_socket_path_for(user, Some(OsStr::from_bytes(d))).0;
        assert_eq!(
            xdg(b"/run/user/1000"),
            Path::new("/run/user/1000/tether.sock")
        );
        let fallback = Path::new("/tmp/tether-1000/tether.sock");
        let none = SocketFrom::Fallback(None);
        assert_eq!(default_socket_path_for(user, None), (fallback.into(), none));
        let empty = default_socket_path_for(user, Some(OsStr::new("")));
        assert_eq!(empty, (fallback.into(), none));
        let rel = default_socket_path_for(user, Some(OsStr::new("run/user/1000")));
        let passed_over = SocketFrom::Fallback(Some("not an absolute path"));
        assert_eq!(rel, (fallback.into(), passed_over));
        let long = format!("/{}", "d".repeat(SOCK_PATH_MAX - "/tether.sock".len() - 1));
        assert_eq!(xdg(long.as_bytes()).as_os_str().len(), SOCK_PATH_MAX);
        let too_long = format!("{long}d");
        for bad in [
            &b"run/user/1000"[..],
            b"/run/user/1000\nWATCHDOG=trigger",
            b"/run/\x1b[2J",
            "/run/e\u{9b}2J".as_bytes(),
            b"/run/k\xfcche",
            too_long.as_bytes(),
        ] {
            assert_eq!(xdg(bad), fallback, "{:?}", OsStr::from_bytes(bad));
        }
        let root = default_socket_path_for(Uid::from_raw(0), Some(OsStr::new("/run/user/0")));
        assert_eq!(root, ("/run/tether/tether.sock".into(), SocketFrom::System));
    }
}
