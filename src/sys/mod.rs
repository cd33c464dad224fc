//! The operating-system edge: the only module that calls nix's socket, signal and ioctl
//! APIs (poll(2) itself is called by `runloop`, and by the client `scan`). Everything
//! here is thin: open, configure, read back. No protocol logic lives here: what is read
//! back is handed up as plain data (e.g. [`net::socket_info`]) for `proto` to encode.
//!
//! Every fd this module creates is non-blocking and close-on-exec. Functions used after
//! start-up do not allocate: paths and names go through fixed stack buffers.

pub mod board;
pub mod iface;
pub mod led;
pub mod net;
pub mod notify;
pub mod signals;
pub mod stderr;
pub mod udp;
pub mod unix;

use nix::errno::Errno;
use std::fmt;

/// A failure with the context needed to act on it: `bind 0.0.0.0:4545: EADDRINUSE`.
#[derive(Debug)]
pub struct SysError {
    pub what: String,
    pub errno: Option<Errno>,
}

impl SysError {
    pub fn new(what: impl Into<String>, errno: Errno) -> Self {
        SysError {
            what: what.into(),
            errno: Some(errno),
        }
    }

    pub fn msg(what: impl Into<String>) -> Self {
        SysError {
            what: what.into(),
            errno: None,
        }
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(e) => write!(f, "{}: {}", self.what, e),
            None => f.write_str(&self.what),
        }
    }
}

/// Appends `bytes` (a name as the kernel holds it: a host or interface name) to `out` as
/// text, without allocating: UTF-8 as it is, each byte sequence that is not UTF-8 as
/// U+FFFD (as `String::from_utf8_lossy`); stops at the last char that fits. For display
/// only: a name shown with U+FFFD no longer names its interface.
pub fn push_lossy<const N: usize>(out: &mut heapless::String<N>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let bad = (!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER);
        for ch in chunk.valid().chars().chain(bad) {
            if out.push(ch).is_err() {
                return;
            }
        }
    }
}

/// Whether a name or path (an interface, a socket) can be shown as it is, in the ready
/// line, the log and systemd's status: no control character, ASCII's or C1's (U+0080 to
/// U+009F, which some terminals obey too), and no bidirectional formatting character
/// ([`crate::exit::hidden`]). A newline would start a line or a field of its own there, an
/// escape would drive the terminal that shows it, and U+202E would reorder the line.
pub fn shows_as_is(s: &str) -> bool {
    !s.chars().any(crate::exit::hidden)
}

/// Closes every descriptor above stderr that the agent was started with. busybox's
/// start-stop-daemon, a shell's saved descriptors or a provisioning tool pass theirs on;
/// kept, a pipe's reader would wait for its end for as long as the agent runs
/// (`x=$(/etc/init.d/tether start)`), and a descriptor of a mount keeps it busy. Call it
/// first, before anything is opened. close_range(2) (Linux 5.9); before that, one close(2)
/// per possible descriptor below RLIMIT_NOFILE (at most 65,536).
///
/// # Safety
///
/// Nothing in the process may own a descriptor above 2 (a `File`, an `OwnedFd`): it would
/// be closed under its owner, whose drop then closes whatever took the number next. Call
/// it before anything is opened.
pub unsafe fn close_inherited() {
    use nix::libc;
    // SAFETY: the caller owns no descriptor above 2; close_range only closes. Its
    // arguments are unsigned ints; syscall(2) reads longs, so they go as such (~0 as the
    // kernel truncates it: 32 bits of ones, whatever a long's width).
    let (first, last): (libc::c_long, libc::c_long) = (3, u32::MAX as libc::c_long);
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_long) } == 0 {
        return;
    }
    let most = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(65_536));
    for fd in 3..most as i32 {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

/// `len` bytes of zeroed memory for the life of the process, straight from mmap(2): the
/// kernel makes a page resident only when it is first written, so buffers made at start-up
/// cost no RSS until they are used. Not the C library's calloc: musl's takes fresh pages
/// from mmap as they are, but the libc zig links into the 32-bit ARM builds zeroes the
/// block by hand, which made all 16 client slots (260 KiB) resident at start (a Pi Zero's
/// agent: 728 KiB idle). Err: ENOMEM (or `len` 0: EINVAL).
pub fn zeroed_pages(len: usize) -> Result<&'static mut [u8], Errno> {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let n = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a new private anonymous mapping, placed by the kernel, aliases nothing.
    let p = unsafe { mmap_anonymous(None, n, prot, MapFlags::MAP_PRIVATE) }?;
    // SAFETY: the mapping is `len` bytes, readable and writable, zero-filled, and never
    // unmapped: the one slice over it may live (and be written) for the whole process.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.as_ptr().cast::<u8>(), len) })
}

/// Opens a file the agent reads (/proc, /sys, `--thermal`, the LED's, key files), for
/// reading and non-blocking: a path that is a FIFO (a mistake in `--thermal`, say) reads
/// as nothing or fails instead of stopping the whole agent in open(2) or read(2).
pub fn open_read(path: impl AsRef<std::path::Path>) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

/// Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): "not now", not "not
/// there" nor "not allowed". What was to be read, made or accepted is as it was.
pub fn short(e: Errno) -> bool {
    matches!(
        e,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

/// A file that is there but cannot be read now: [`short`], or an I/O error (a failing SD
/// card). At start-up that is the system's failure (exit 71, which systemd restarts), not
/// the configuration's (78, which it does not); a reload keeps what it had.
pub fn unreadable_now(e: Errno) -> bool {
    short(e) || e == Errno::EIO
}

/// The exit code when start-up (or a client) stops on `e` from reading what it was
/// given: 71 (the system's, which systemd restarts) for [`unreadable_now`], else 78 (the
/// configuration's: not there, not allowed, not a file), which it does not.
pub fn read_failure_code(e: Errno) -> u8 {
    if unreadable_now(e) {
        crate::exit::EX_OSERR
    } else {
        crate::exit::EX_CONFIG
    }
}

/// The errno of an I/O error from std (EIO when it carries none).
fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

/// Reads a small file into `buf` without allocating ([`open_read`]); returns the bytes read.
pub fn read_small(path: &str, buf: &mut [u8]) -> Option<usize> {
    read_all(open_read(path).ok()?, buf).ok()
}

/// [`read_small`] that tells a file that is not there (`Ok(None)`: ENOENT, ENOTDIR) from
/// one that is there but could not be read now (out of descriptors, EACCES, EIO).
pub fn read_small_if_there(path: &str, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
    match open_read(path) {
        Ok(f) => read_all(f, buf).map(Some).map_err(|e| errno_of(&e)),
        Err(e) => match errno_of(&e) {
            Errno::ENOENT | Errno::ENOTDIR => Ok(None),
            e => Err(e),
        },
    }
}

fn read_all(mut f: std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Why a secret file (`--token-file`, `--fleet-key`) holds no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSecret {
    /// open(2) or read(2) failed: missing, not allowed, or not now ([`unreadable_now`]).
    Unreadable(Errno),
    Empty,
    /// Longer than the given number of bytes (white space trimmed).
    TooLong(usize),
    /// Over the given number of bytes and [`SECRET_SLACK`] bytes of white space: read no
    /// further.
    ///
    /// [`SECRET_SLACK`]: crate::limits::SECRET_SLACK
    TooBig(usize),
}

impl fmt::Display for NoSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSecret::Unreadable(e) if unreadable_now(*e) => write!(f, "cannot be read now ({e})"),
            NoSecret::Unreadable(e) => write!(f, "missing or unreadable ({e})"),
            NoSecret::Empty => f.write_str("empty"),
            NoSecret::TooLong(max) => write!(f, "longer than {max} bytes"),
            NoSecret::TooBig(max) => {
                let slack = crate::limits::SECRET_SLACK;
                let file = max + slack;
                write!(
                    f,
                    "the file is over {file} bytes (at most {max} and {slack} of white space)"
                )
            }
        }
    }
}

impl NoSecret {
    /// The exit code when start-up (or `ctl`) stops on it: 71 for a file that cannot be
    /// read now ([`unreadable_now`]), else 78 (the file is wrong).
    pub fn exit_code(&self) -> u8 {
        match self {
            NoSecret::Unreadable(e) => read_failure_code(*e),
            _ => crate::exit::EX_CONFIG,
        }
    }
}

/// A secret file's contents, and whether users other than its owner and group can read or
/// change the file: said once the caller takes the contents ([`Secret::accept`], or
/// [`Secret::accept_with`] when they must parse first: a key too short to use is one
/// `error:` line, not a warning about its mode first). The contents are reached only
/// through those two.
#[must_use = "accept() it: that warns about a file others can read"]
pub struct Secret<'b> {
    bytes: &'b [u8],
    mode: u32,
}

impl<'b> Secret<'b> {
    /// The contents (see [`Secret::accept_with`]).
    pub fn accept(self, path: &std::path::Path) -> &'b [u8] {
        match self.accept_with(path, Ok::<_, std::convert::Infallible>) {
            Ok(b) => b,
            Err(never) => match never {},
        }
    }

    /// The agent's `--token-file` contents ([`Secret::accept`]), with a warning when the
    /// token is shorter than [`TOKEN_ADVISED_MIN`] bytes (taken all the same: refusing it
    /// would leave the board without its control port after an upgrade).
    ///
    /// [`TOKEN_ADVISED_MIN`]: crate::limits::TOKEN_ADVISED_MIN
    pub fn accept_token(self, path: &std::path::Path) -> &'b [u8] {
        use crate::limits::TOKEN_ADVISED_MIN;
        let token = self.accept(path);
        if token.len() < TOKEN_ADVISED_MIN {
            log::warn!(
                "{}: a token of {} bytes can be guessed (an AUTH exchange seen on the LAN lets anyone test guesses offline): use at least {TOKEN_ADVISED_MIN} random bytes, e.g. `head -c 24 /dev/urandom | base64`",
                path.display(),
                token.len()
            );
        }
        token
    }

    /// `parse` of the contents; when it takes them, a warning first if every user of the
    /// board can read (or change) the file: a secret that is no secret is said, not
    /// refused (the agent's user may be the only one there is).
    pub fn accept_with<T, E>(
        self,
        path: &std::path::Path,
        parse: impl FnOnce(&'b [u8]) -> Result<T, E>,
    ) -> Result<T, E> {
        let taken = parse(self.bytes)?;
        if self.mode & 0o006 != 0 {
            let can = if self.mode & 0o002 != 0 {
                "change"
            } else {
                "read"
            };
            let (p, m) = (path.display(), self.mode & 0o7777);
            log::warn!("{p}: other users can {can} it (mode {m:04o}): chmod o-rwx it");
        }
        Ok(taken)
    }
}

/// Reads a secret file into `buf` without allocating: its contents with surrounding white
/// space trimmed, 1..=`max` bytes. `buf` ([`secret_buf_len`]`(max)` bytes) holds `max`
/// plus [`SECRET_SLACK`] bytes of white space and one more: a file that fills it is too
/// long.
///
/// [`secret_buf_len`]: crate::limits::secret_buf_len
///
/// [`SECRET_SLACK`]: crate::limits::SECRET_SLACK
///
/// `wait`: a client's read (ctl's `--token-file`, scan's `--fleet-key`) waits for a pipe's
/// writer, as in `--token-file <(pass show board)`; the agent's never does (its loop must
/// not stop on a FIFO), and a pipe that has nothing yet is unreadable (EAGAIN) to it.
pub fn read_secret<'b>(
    path: &std::path::Path,
    buf: &'b mut [u8],
    max: usize,
    wait: bool,
) -> Result<Secret<'b>, NoSecret> {
    let f = open_read(path).map_err(|e| NoSecret::Unreadable(errno_of(&e)))?;
    if wait {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        fcntl(&f, FcntlArg::F_SETFL(OFlag::empty())).map_err(NoSecret::Unreadable)?;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = f.metadata().map_or(0, |m| m.permissions().mode());
    let n = read_all(f, buf).map_err(|e| NoSecret::Unreadable(errno_of(&e)))?;
    if n == buf.len() {
        return Err(NoSecret::TooBig(max));
    }
    match buf[..n].trim_ascii() {
        [] => Err(NoSecret::Empty),
        s if s.len() > max => Err(NoSecret::TooLong(max)),
        bytes => Ok(Secret { bytes, mode }),
    }
}
