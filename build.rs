// Tells the integration tests which target they were built for, so they can start the
// `tether` binary through the same runner cargo uses (qemu-user for foreign targets), and
// `tether --version` which commit it was built from (nothing without git: a tarball, a
// container without it).
use std::process::Command;

/// git's answer in this source tree only: never a repository around it (a tarball unpacked
/// in Buildroot's tree, a home directory under git), whose commit is not this one's.
fn git(args: &[&str]) -> Option<String> {
    let root = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let above = std::path::Path::new(&root).parent()?;
    let out = Command::new("git")
        .args(args)
        .env("TZ", "UTC")
        .env("GIT_CEILING_DIRECTORIES", above)
        // `git status` refreshes the index when it may: not from a build.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    if !out.status.success() {
        // A repository git refuses (another owner's: "dubious ownership") is said; none
        // at all (a tarball) is not.
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("not a git repository") {
            for line in err.lines().filter(|l| !l.trim().is_empty()) {
                println!("cargo:warning=git {}: {line}", args[0]);
            }
        }
        return None;
    }
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

/// What the binary is built from (tracked files): a change to any of them since the commit
/// marks `--version`'s commit `-dirty`. Relative to the package's root, where cargo runs
/// this script.
const SOURCES: [&str; 5] = ["src", "build.rs", "Cargo.toml", "Cargo.lock", ".cargo"];

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    println!("cargo:rustc-env=TETHER_BUILD_TARGET={target}");
    println!("cargo:rustc-env=TETHER_BUILD_HOST={host}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=TETHER_SOURCES={}", SOURCES.join(" "));
    // A 32-bit musl build without .cargo/config.toml's libc cfg (a RUSTFLAGS variable
    // replaces that file's rustflags): its libc calls stop telling the time of day past
    // 2038-01-19 03:14:07 UTC (docs/BOARDS.md, "The year 2038").
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ENV") == "musl"
        && var("CARGO_CFG_TARGET_POINTER_WIDTH") == "32"
        && std::env::var_os("CARGO_CFG_LIBC_UNSTABLE_MUSL_V1_2").is_none()
    {
        println!(
            "cargo:warning=built without --cfg libc_unstable_musl_v1_2, which \
             .cargo/config.toml sets (a RUSTFLAGS variable replaces it: add it there too): \
             log-file times stop past 2038-01-19 03:14:07 UTC"
        );
    }
    // The 8 hex digits the package's version names too, and the commit's date (UTC); and
    // `-dirty` when what the binary is built from differs from that commit.
    let commit = git(&[
        "log",
        "-1",
        "--abbrev=8",
        "--format=%h %cd",
        "--date=format-local:%Y-%m-%d",
    ]);
    let Some((hash, date)) = commit.as_ref().and_then(|c| c.split_once(' ')) else {
        println!("cargo:rustc-env=TETHER_COMMIT=");
        println!("cargo:rustc-env=TETHER_REVISION=");
        return;
    };
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(SOURCES);
    let dirty = if git(&status).is_some() { "-dirty" } else { "" };
    println!("cargo:rustc-env=TETHER_COMMIT= (git {hash}{dirty}, {date})");
    // The same commit alone, for STATUS `revision` and `tether_build_info{revision}`.
    println!("cargo:rustc-env=TETHER_REVISION={hash}{dirty}");
    // Built again when HEAD moves: HEAD, the reflog every commit, checkout and reset
    // appends to, the loose refs (a directory: cargo looks inside) and the packed ones;
    // and when a source changes. Only what exists: cargo runs a script whose watched path
    // is missing every time.
    for f in ["HEAD", "logs/HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", f]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    for f in SOURCES.iter().filter(|f| std::path::Path::new(f).exists()) {
        println!("cargo:rerun-if-changed={f}");
    }
}
