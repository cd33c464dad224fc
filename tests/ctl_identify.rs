//! `tether ctl IDENTIFY` against `--led /sys/class/leds/ACT/brightness` (the form SPEC.md
//! suggests), on a fake LED directory: the LED's trigger (e.g. heartbeat), which the
//! kernel drops at the first brightness write, comes back after the blink.

mod common;

use common::*;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

#[test]
fn identify_on_a_brightness_file_restores_the_leds_trigger() {
    let led = temp_dir("led").join("ACT");
    std::fs::create_dir_all(&led).unwrap();
    std::fs::write(led.join("brightness"), "0\n").unwrap();
    std::fs::write(led.join("max_brightness"), "255\n").unwrap();
    std::fs::write(led.join("trigger"), "none timer [heartbeat] mmc0\n").unwrap();
    let a = Agent::start(&["--led", led.join("brightness").to_str().unwrap()]);
    let read = |f: &str| std::fs::read_to_string(led.join(f)).unwrap_or_default();
    let (code, out, err) = a.ctl(&["IDENTIFY", "1"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    let (mut lit, mut untriggered) = (false, false);
    let restored = wait_for(slack(Duration::from_secs(5)), || {
        lit |= read("brightness").trim() == "255";
        untriggered |= read("trigger") == "none";
        read("trigger") == "heartbeat"
    });
    assert!(lit, "the LED never went on at max_brightness");
    assert!(
        untriggered,
        "the trigger was not set to none while blinking"
    );
    assert!(restored, "trigger not restored: {:?}", read("trigger"));
    assert_eq!(read("brightness"), "0\n");
}

const TRIGGER: &str = "none timer [heartbeat] mmc0\n";

/// A fake LED directory (`.../ACT`) with the trigger `heartbeat`, and an agent driving it
/// through `--led .../ACT/brightness`.
fn agent_on_a_fake_led(tag: &str) -> (Agent, std::path::PathBuf) {
    let led = temp_dir(tag).join("ACT");
    std::fs::create_dir_all(&led).unwrap();
    std::fs::write(led.join("brightness"), "0\n").unwrap();
    std::fs::write(led.join("max_brightness"), "255\n").unwrap();
    std::fs::write(led.join("trigger"), TRIGGER).unwrap();
    let a = Agent::start(&["--led", led.join("brightness").to_str().unwrap()]);
    (a, led)
}

/// Replaces one of the LED's files with a directory: there, but reading it fails (EISDIR,
/// standing in for the ENOMEM or EIO a sysfs read can give).
fn make_unreadable(led: &std::path::Path, f: &str) {
    std::fs::remove_file(led.join(f)).unwrap();
    std::fs::create_dir(led.join(f)).unwrap();
}

/// IDENTIFY saves the brightness before it writes anything; one it cannot read fails
/// IDENTIFY with the LED as it was: its trigger not taken (nothing could put it back).
#[test]
fn identify_with_an_unreadable_brightness_fails_and_leaves_the_led_as_it_was() {
    let (a, led) = agent_on_a_fake_led("led-unreadable-brightness");
    let read = |f: &str| std::fs::read_to_string(led.join(f)).unwrap_or_default();
    make_unreadable(&led, "brightness");
    let r = a.unix().req("IDENTIFY 1");
    assert_eq!(r, "ERR unsupported cannot read the LED's brightness");
    assert_eq!(read("trigger"), TRIGGER, "the trigger was written");
    assert_eq!(read("max_brightness"), "255\n");
    // Readable again: IDENTIFY blinks and puts it all back.
    std::fs::remove_dir(led.join("brightness")).unwrap();
    std::fs::write(led.join("brightness"), "0\n").unwrap();
    assert_eq!(a.unix().req("IDENTIFY 1"), "OK");
    assert!(
        wait_for(slack(Duration::from_secs(5)), || read("trigger")
            == "heartbeat"),
        "trigger not restored: {:?}",
        read("trigger")
    );
    assert_eq!(read("brightness"), "0\n");
}

/// A trigger file that is there but cannot be read now: IDENTIFY fails before it writes
/// anything, instead of setting `none` with no name to restore (which left the LED
/// without its heartbeat until reboot).
#[test]
fn identify_with_an_unreadable_trigger_fails_and_leaves_the_led_as_it_was() {
    let (a, led) = agent_on_a_fake_led("led-unreadable-trigger");
    let read = |f: &str| std::fs::read_to_string(led.join(f)).unwrap_or_default();
    make_unreadable(&led, "trigger");
    let r = a.unix().req("IDENTIFY 1");
    assert_eq!(r, "ERR unsupported cannot read the LED's trigger");
    assert_eq!(read("brightness"), "0\n", "the brightness was written");
    assert_eq!(read("max_brightness"), "255\n");
    assert!(led.join("trigger").is_dir());
    // One whose read fails while its write would not: a FIFO this test holds open, with
    // nothing in it (EAGAIN).
    std::fs::remove_dir(led.join("trigger")).unwrap();
    nix::unistd::mkfifo(&led.join("trigger"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(led.join("trigger"))
        .unwrap();
    let r = a.unix().req("IDENTIFY 1");
    assert!(r.starts_with("ERR unsupported "), "{r}");
    assert_eq!(read("brightness"), "0\n", "the brightness was written");
    let mut got = [0u8; 16];
    let n = std::io::Read::read(&mut fifo, &mut got);
    assert!(
        n.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the trigger was written: {n:?} {:?}",
        &got[..*n.as_ref().unwrap_or(&0)]
    );
    // One that names no active trigger (`[]`): nothing could be put back (the kernel
    // refuses an empty name), so nothing is written.
    drop(fifo);
    std::fs::remove_file(led.join("trigger")).unwrap();
    std::fs::write(led.join("trigger"), "none timer [] mmc0\n").unwrap();
    let r = a.unix().req("IDENTIFY 1");
    // The reply says why (it said "cannot write the LED" whatever the cause).
    assert_eq!(
        r,
        "ERR unsupported no active trigger in the LED's trigger file"
    );
    assert_eq!(read("brightness"), "0\n", "the brightness was written");
    assert_eq!(read("trigger"), "none timer [] mmc0\n");
}
