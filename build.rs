// Tells the integration tests which target they were built for, so they can start the
// `tether` binary through the same runner cargo uses (qemu-user for foreign targets), and
// `tether --version` which commit it was built from (nothing without git: a tarball, a
// container without it).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !s.trim().is_empty()).then(|| s.trim().to_string())
}

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    println!("cargo:rustc-env=TETHER_BUILD_TARGET={target}");
    println!("cargo:rustc-env=TETHER_BUILD_HOST={host}");
    println!("cargo:rerun-if-changed=build.rs");
    // The 8 hex digits the package's version names too, and the commit's date (UTC).
    let commit = git(&[
        "log",
        "-1",
        "--abbrev=8",
        "--format=%h, %cd",
        "--date=format-local:%Y-%m-%d",
    ]);
    println!(
        "cargo:rustc-env=TETHER_COMMIT={}",
        commit.map_or(String::new(), |c| format!(" (git {c})"))
    );
    // Built again when HEAD moves: HEAD itself, the branch it names, packed refs. Only
    // files that exist (cargo runs a script whose watched file is missing every time).
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for f in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &f]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
