//! The IDENTIFY LED: a `/sys/class/leds/NAME` directory, or its `brightness` file (then
//! treated as the directory: trigger set to `none` while blinking, restored after), or a
//! plain brightness file with no `trigger` beside it (a regular file in tests).

use super::{read_small_if_there, SysError};
use crate::agent::Led;
use crate::limits::{LED_BRIGHTNESS_MAX, LED_ON_MAX, LED_READ_MAX, LED_TRIGGER_MAX};
use nix::errno::Errno;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct LedFile {
    brightness: PathBuf,
    trigger: Option<PathBuf>,
    on_value: heapless::Vec<u8, LED_ON_MAX>,
    /// What to put back: the old trigger name (sysfs) and the old brightness bytes.
    saved: Option<(
        heapless::Vec<u8, LED_TRIGGER_MAX>,
        heapless::Vec<u8, LED_BRIGHTNESS_MAX>,
    )>,
}

/// Opened for writing (emptied first with `truncate`, for the plain files tests and boards
/// without sysfs use), non-blocking: a FIFO without a reader fails instead of blocking.
fn open_w(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(truncate)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

/// The active trigger in a sysfs `trigger` file, the name between `[` and `]`: read a
/// piece at a time, since the list of every trigger the kernel has can pass a page (it
/// grows with CPUs, PHYs, mmc hosts, rfkill switches). An error when it cannot be read
/// or names none: then nothing could put the trigger back, so IDENTIFY must not take it.
fn active_trigger(path: &Path) -> Result<heapless::Vec<u8, LED_TRIGGER_MAX>, &'static str> {
    use std::io::Read;
    const UNREADABLE: &str = "cannot read the LED's trigger";
    const NONE: &str = "no active trigger in the LED's trigger file";
    let mut name = heapless::Vec::new();
    let mut f = super::open_read(path).map_err(|_| UNREADABLE)?;
    let mut buf = [0u8; LED_READ_MAX];
    let mut inside = false;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return Err(NONE),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(UNREADABLE),
        };
        for &c in &buf[..n] {
            match c {
                b'[' => inside = true,
                // `[]`: no name to put back (the kernel refuses an empty one).
                b']' if inside && name.is_empty() => return Err(NONE),
                b']' if inside => return Ok(name),
                // A name longer than any trigger's: not a trigger file after all.
                _ if inside && name.push(c).is_err() => return Err(NONE),
                _ => {}
            }
        }
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), &'static str> {
    let mut f = open_w(path, true).map_err(|_| "cannot open the LED file")?;
    f.write_all(data).map_err(|_| "cannot write the LED file")
}

/// The file's first `N` bytes; `Ok(None)` when it is not there ([`read_small_if_there`]),
/// an error when it is there but cannot be read now.
fn read_into<const N: usize>(path: &Path) -> Result<Option<heapless::Vec<u8, N>>, Errno> {
    let mut buf = [0u8; LED_READ_MAX];
    let p = path.to_str().ok_or(Errno::EINVAL)?;
    Ok(read_small_if_there(p, &mut buf)?.map(|n| {
        let mut v = heapless::Vec::new();
        let _ = v.extend_from_slice(&buf[..n.min(N)]);
        v
    }))
}

impl LedFile {
    /// Checks the path at start-up, so a typo is an error then, not at IDENTIFY time.
    pub fn open(path: &Path) -> Result<LedFile, SysError> {
        // `.../leds/ACT/brightness` (the form the docs suggest) is the LED's directory:
        // the kernel drops the trigger at the first brightness write, so it must be saved.
        // A file there that cannot be read now is an error, not taken for one that is not.
        let read = |f: &Path| {
            read_into::<LED_ON_MAX>(f)
                .map_err(|e| SysError::new(format!("--led {}", f.display()), e))
        };
        let (dir, trigger) = match path.parent() {
            _ if path.is_dir() => {
                let t = path.join("trigger");
                (Some(path), read(&t)?.map(|_| t))
            }
            // A `brightness` file is an LED's only beside a `trigger`.
            Some(d) if path.file_name() == Some("brightness".as_ref()) => {
                let t = d.join("trigger");
                match read(&t)? {
                    Some(_) => (Some(d), Some(t)),
                    None => (None, None),
                }
            }
            _ => (None, None),
        };
        let brightness = dir.map_or_else(|| path.to_path_buf(), |d| d.join("brightness"));
        // Both files IDENTIFY writes must be writable now, or the agent does not start...
        for f in [Some(&brightness), trigger.as_ref()].into_iter().flatten() {
            open_w(f, false).map_err(|e| {
                SysError::new(format!("--led {}", f.display()), super::errno_of(&e))
            })?;
        }
        // ...and brightness readable: IDENTIFY saves it before it writes.
        read(&brightness)?;
        let mut on_value = heapless::Vec::new();
        let max = match dir {
            Some(d) => read(&d.join("max_brightness"))?,
            None => None,
        };
        let max = max.as_ref().map_or(&[][..], |m| m.trim_ascii());
        let _ = on_value.extend_from_slice(if !max.is_empty() { max } else { b"1" });
        let _ = on_value.push(b'\n');
        Ok(LedFile {
            brightness,
            trigger,
            on_value,
            saved: None,
        })
    }

    pub fn set(&mut self, cmd: Led) -> Result<(), &'static str> {
        match cmd {
            Led::On | Led::Off => {
                let first = self.saved.is_none();
                if first {
                    // Both read before anything is written: what cannot be saved now could
                    // not be put back, so then the LED is left as it is.
                    // A sysfs trigger file lists all triggers with the active one in [].
                    let trig = match &self.trigger {
                        Some(t) => active_trigger(t)?,
                        None => heapless::Vec::new(),
                    };
                    let bright = match read_into::<LED_BRIGHTNESS_MAX>(&self.brightness) {
                        Ok(Some(b)) => b,
                        _ => return Err("cannot read the LED's brightness"),
                    };
                    if let Some(t) = &self.trigger {
                        write_file(t, b"none")?;
                    }
                    self.saved = Some((trig, bright));
                }
                let v: &[u8] = if cmd == Led::On {
                    &self.on_value
                } else {
                    b"0\n"
                };
                let r = write_file(&self.brightness, v);
                if r.is_err() && first {
                    // IDENTIFY fails: the trigger it took away goes back now.
                    let _ = self.set(Led::Restore);
                }
                r
            }
            // Kept until it went back: a restore that failed (the LED's files briefly not
            // writable) is tried again at the end of the next IDENTIFY, which finds it
            // saved and does not take the `none` it left for the LED's own trigger.
            Led::Restore => {
                let Some((trig, bright)) = &self.saved else {
                    return Ok(());
                };
                // Both, and an error if either failed: kept saved, tried again.
                let r = write_file(&self.brightness, bright);
                let r = match &self.trigger {
                    Some(t) => write_file(t, trig).and(r),
                    None => r,
                };
                if r.is_ok() {
                    self.saved = None;
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_file_blinks_and_restores() {
        let dir = std::env::temp_dir().join(format!("tether-led-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("brightness-file");
        std::fs::write(&f, "7\n").unwrap();
        let mut led = LedFile::open(&f).unwrap();
        led.set(Led::On).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1\n");
        led.set(Led::Off).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "0\n");
        led.set(Led::Restore).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "7\n");

        // A sysfs-like directory: trigger goes to none and comes back.
        let d = dir.join("led0");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("brightness"), "0\n").unwrap();
        std::fs::write(d.join("max_brightness"), "255\n").unwrap();
        std::fs::write(d.join("trigger"), "none [mmc0] timer\n").unwrap();
        let mut led = LedFile::open(&d).unwrap();
        led.set(Led::On).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("trigger")).unwrap(), "none");
        assert_eq!(
            std::fs::read_to_string(d.join("brightness")).unwrap(),
            "255\n"
        );
        led.set(Led::Restore).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("trigger")).unwrap(), "mmc0");

        // Its brightness file (`--led /sys/class/leds/ACT/brightness`) is the same LED:
        // the trigger is saved and put back too.
        std::fs::write(d.join("trigger"), "none [heartbeat] timer\n").unwrap();
        let mut led = LedFile::open(&d.join("brightness")).unwrap();
        led.set(Led::On).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("trigger")).unwrap(), "none");
        assert_eq!(
            std::fs::read_to_string(d.join("brightness")).unwrap(),
            "255\n"
        );
        led.set(Led::Off).unwrap();
        led.set(Led::Restore).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("trigger")).unwrap(),
            "heartbeat"
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert!(LedFile::open(&dir.join("missing")).is_err());
    }

    /// A sysfs-like LED directory in a fresh temp dir.
    fn led_dir(tag: &str, trigger: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tether-led-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("brightness"), "0\n").unwrap();
        std::fs::write(d.join("trigger"), trigger).unwrap();
        d
    }

    #[test]
    fn a_trigger_list_longer_than_a_read_is_still_restored() {
        // Real lists grow with CPUs, PHYs and mmc hosts; the active one can come late.
        let mut list: String = (0..120).map(|i| format!("trigger{i:03} ")).collect();
        list += "[mmc0] rfkill0\n";
        assert!(list.len() > 2 * LED_READ_MAX);
        let d = led_dir("long", &list);
        let mut led = LedFile::open(&d).unwrap();
        led.set(Led::On).unwrap();
        led.set(Led::Restore).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("trigger")).unwrap(), "mmc0");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_identify_puts_the_trigger_back_and_an_unwritable_led_fails_at_start() {
        let d = led_dir("fail", "none [heartbeat] timer\n");
        let mut led = LedFile::open(&d).unwrap();
        // The brightness file becomes something that reads (as empty) but no one can
        // write (a FIFO without a reader: root ignores file modes).
        std::fs::remove_file(d.join("brightness")).unwrap();
        nix::unistd::mkfifo(&d.join("brightness"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(led.set(Led::On).is_err());
        assert_eq!(
            std::fs::read_to_string(d.join("trigger")).unwrap(),
            "heartbeat"
        );
        // At start-up each file IDENTIFY writes must be writable: brightness...
        assert!(LedFile::open(&d).is_err());
        // ...and the trigger.
        std::fs::remove_file(d.join("brightness")).unwrap();
        std::fs::write(d.join("brightness"), "0\n").unwrap();
        std::fs::remove_file(d.join("trigger")).unwrap();
        std::fs::create_dir(d.join("trigger")).unwrap();
        let e = LedFile::open(&d)
            .err()
            .expect("an unwritable trigger is refused");
        assert!(e.to_string().contains("trigger"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_restore_that_failed_is_done_at_the_next_identify() {
        let d = led_dir(
            "restore",
            "none [heartbeat] timer
",
        );
        let mut led = LedFile::open(&d).unwrap();
        led.set(Led::On).unwrap();
        // The trigger file is briefly not writable when IDENTIFY ends.
        std::fs::remove_file(d.join("trigger")).unwrap();
        std::fs::create_dir(d.join("trigger")).unwrap();
        assert!(led.set(Led::Restore).is_err());
        std::fs::remove_dir(d.join("trigger")).unwrap();
        std::fs::write(d.join("trigger"), "[none] heartbeat timer\n").unwrap();
        // The next IDENTIFY blinks, and its end gives the LED its own trigger back.
        led.set(Led::On).unwrap();
        led.set(Led::Restore).unwrap();
        let trigger = std::fs::read_to_string(d.join("trigger")).unwrap();
        assert_eq!(trigger, "heartbeat");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_restore_that_could_not_write_the_brightness_is_not_done() {
        let d = led_dir("bright", "none [heartbeat] timer\n");
        std::fs::write(d.join("brightness"), "5\n").unwrap();
        let mut led = LedFile::open(&d).unwrap();
        led.set(Led::On).unwrap();
        // The trigger goes back, the brightness cannot: an error, and kept for next time.
        std::fs::remove_file(d.join("brightness")).unwrap();
        std::fs::create_dir(d.join("brightness")).unwrap();
        assert!(led.set(Led::Restore).is_err());
        std::fs::remove_dir(d.join("brightness")).unwrap();
        std::fs::write(d.join("brightness"), "1\n").unwrap();
        led.set(Led::Restore).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("brightness")).unwrap(),
            "5\n"
        );
        let trigger = std::fs::read_to_string(d.join("trigger")).unwrap();
        assert_eq!(trigger, "heartbeat");
        let _ = std::fs::remove_dir_all(&d);
    }
}
