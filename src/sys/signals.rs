//! Signals as an ordinary pollable fd (signalfd): SIGTERM/SIGINT stop, SIGHUP reloads.
//! SIGPIPE is ignored so a vanished peer can never kill the agent (sends also pass
//! MSG_NOSIGNAL).

use super::SysError;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};

pub enum Event {
    Stop(Signal),
    Reload,
}

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    pub fn install() -> Result<Signals, SysError> {
        let ign = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no handler code, so no async-signal-safety concerns.
        unsafe { sigaction(Signal::SIGPIPE, &ign) }
            .map_err(|e| SysError::new("ignore SIGPIPE", e))?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        mask.thread_block()
            .map_err(|e| SysError::new("block signals", e))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| SysError::new("signalfd", e))?;
        Ok(Signals { fd })
    }

    /// The next pending signal, if any.
    pub fn pending(&mut self) -> Option<Event> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => return Some(Event::Reload),
                    Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => return Some(Event::Stop(s)),
                    _ => continue,
                },
                Ok(None) => return None,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
