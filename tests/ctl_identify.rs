//! `tether ctl IDENTIFY` against `--led /sys/class/leds/ACT/brightness` (the form SPEC.md
//! suggests), on a fake LED directory: the LED's trigger (e.g. heartbeat), which the
//! kernel drops at the first brightness write, comes back after the blink.

mod common;

use common::*;
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
