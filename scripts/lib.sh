# Shared shell helpers for scripts/*. Source it: . "$(dirname "$0")/lib.sh"
# Every install step the project needs lives here, so a brand-new machine (or CI) needs
# nothing done by hand. Each helper is idempotent and cheap when the thing is already there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# Wait for another apt/dpkg (a parallel job, unattended-upgrades) instead of failing on its lock.
APT_WAIT=(-o DPkg::Lock::Timeout=600)

# apt_update: run `apt-get update` at most once per boot/run (stamp in /tmp).
# A foreign-architecture list may fail to load (exit 100) while the main lists load: tolerate it.
apt_update() {
    local stamp=/tmp/.tether-apt-updated
    [ -e "$stamp" ] && return 0
    say "apt-get update"
    as_root apt-get "${APT_WAIT[@]}" update -qq >/dev/null 2>&1 || say "apt-get update exited non-zero (tolerated)"
    touch "$stamp"
}

# need_cmd CMD DEBIAN_PACKAGE...: install the packages when CMD is missing.
need_cmd() {
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and there is no apt-get: install $* by hand"
    apt_update
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "$@" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || die "installed $* but $cmd is still missing"
}

# need_target TRIPLE: rustup target add, returns non-zero (without dying) when rustup cannot serve it.
need_target() {
    grep -qx "$1" <<<"$(rustup target list --installed 2>/dev/null)" && return 0
    # Set where several builds run at once (scripts/build-all's lanes): two rustups must not
    # run together (rust-lang/rustup#988), and the install was tried before the lanes began.
    [ -z "${TETHER_NO_INSTALL:-}" ] || return 1
    say "rustup target add $1"
    rustup target add "$1" >/dev/null 2>&1
}

# side_by_side FUNC ARG...: run `FUNC ARG` for every ARG at once (FUNC a shell function,
# ARG one word or a quoted list), each with its output in a file that is shown whole when it
# has finished, in the order given; dies naming the ARGs whose run failed. For work that keeps
# about one core busy (a release build, an emulated boot, qemu-user), on a 2-core CI machine.
side_by_side() {
    local f=$1 logs i pids=() failed=()
    shift
    logs=$(mktemp -d /tmp/tether-side.XXXXXX)
    for i in $(seq $#); do
        "$f" "${!i}" >"$logs/$i.log" 2>&1 &
        pids+=($!)
    done
    for i in $(seq $#); do
        wait "${pids[$((i - 1))]}" || failed+=("${!i}")
        cat "$logs/$i.log" >&2
    done
    rm -rf "$logs"
    [ ${#failed[@]} -eq 0 ] || die "$f failed for: ${failed[*]} (its output is above)"
}

# ---- boards / cross-compiling helpers (scripts/build-all, test-aarch64, test-arm, qemu-boot, qemu-pi) ----

# Cache for downloads and tools (zig venv, Debian .debs, kernel): gitignored, reused between runs.
TETHER_CACHE=${TETHER_CACHE:-$ROOT/.build}
export TETHER_CACHE

# Cargo's target directory as cargo itself resolves it (CARGO_TARGET_DIR relative to $ROOT).
target_dir() {
    local d=${CARGO_TARGET_DIR:-target}
    case $d in /*) ;; *) d=$ROOT/$d ;; esac
    printf '%s\n' "$d"
}

# now_ms: wall clock in milliseconds (for timings printed by the scripts).
now_ms() { date +%s%3N; }

# need_pkg DEBIAN_PACKAGE...: install the packages that dpkg does not list as installed.
need_pkg() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and there is no apt-get"
    apt_update
    say "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# apt_add_arch ARCH...: enable foreign Debian architectures (for `apt-get download pkg:ARCH`)
# and refresh the lists once for all of them. A failing foreign list (exit 100) is tolerated.
apt_add_arch() {
    local a added=()
    for a in "$@"; do
        [ "$a" = "$(dpkg --print-architecture)" ] && continue
        grep -qx "$a" <<<"$(dpkg --print-foreign-architectures)" && [ -e "/tmp/.tether-apt-arch-$a" ] && continue
        if ! grep -qx "$a" <<<"$(dpkg --print-foreign-architectures)"; then
            say "dpkg --add-architecture $a"
            as_root dpkg --add-architecture "$a"
        fi
        added+=("$a")
    done
    [ ${#added[@]} -eq 0 ] && return 0
    rm -f /tmp/.tether-apt-updated
    apt_update
    for a in "${added[@]}"; do touch "/tmp/.tether-apt-arch-$a"; done
}

# kernel_pkg FLAVOUR ARCH: the versioned package behind Debian's linux-image-FLAVOUR:ARCH
# metapackage (e.g. linux-image-6.1.0-57-arm64), asked from apt-cache: no ABI number is
# written down anywhere, so a point release that drops the old one changes nothing here.
kernel_pkg() {
    local p try
    for try in 1 2; do
        # The first try needs no apt-get update when the lists for ARCH are already there.
        [ $try = 2 ] && apt_add_arch "$2"
        p=$(apt-cache depends --no-recommends "linux-image-$1:$2" 2>/dev/null \
            | sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*\)\(:$2\)\{0,1\}\$/\1/p" | head -n1 || true)
        [ -n "$p" ] && break
    done
    [ -n "$p" ] || die "cannot resolve linux-image-$1:$2 with apt-cache (architecture $2 enabled, lists updated?)"
    printf '%s\n' "$p"
}

# deb_download PKG ARCH DIR: print the path of PKG's .deb for ARCH in the cache DIR, after an
# `apt-get download PKG:ARCH` into DIR when it is not there yet (nothing is installed).
deb_download() {
    local pkg=$1 arch=$2 dir=$3 out found
    mkdir -p "$dir"
    found=("$dir/${pkg}"_*_"$arch".deb)
    if [ ! -e "${found[0]}" ]; then
        apt_add_arch "$arch"
        need_cmd dpkg-deb dpkg
        say "apt-get download $pkg:$arch"
        out=$(cd "$dir" && timeout 600 apt-get download -q "$pkg:$arch" 2>&1) \
            || die "apt-get download $pkg:$arch failed: $out"
        found=("$dir/${pkg}"_*_"$arch".deb)
        [ -e "${found[0]}" ] || die "apt-get download $pkg:$arch left no .deb in $dir"
    fi
    printf '%s\n' "${found[0]}"
}

# need_rust_src: the rust-src component, for -Zbuild-std where rustup serves no prebuilt std.
need_rust_src() {
    grep -q '^rust-src' <<<"$(rustup component list --installed 2>/dev/null)" && return 0
    say "rustup component add rust-src"
    rustup component add rust-src >/dev/null 2>&1 || die "rustup cannot install rust-src"
}

# need_zig: zig (PyPI package `ziglang`) in a venv under $TETHER_CACHE; prints the venv's python.
# zig brings musl's start files and libc for every target, so it links -Zbuild-std binaries.
# Pinned: the C library linked into the 32-bit binaries is zig's, and it changes between
# releases (0.17 replaced musl's malloc with its own); a venv with another version is made
# again.
ZIG_VERSION=0.17.1
need_zig() {
    local venv=$TETHER_CACHE/zig-venv
    if [ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]; then
        need_cmd python3 python3
        rm -rf "$venv"
        mkdir -p "$TETHER_CACHE"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            # Debian's python3 ships venv/ensurepip separately.
            local minor; minor=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            need_pkg python3-venv "python$minor-venv" || need_pkg python3-venv
            python3 -m venv "$venv" >/dev/null || die "python3 -m venv failed"
        fi
        say "pip install ziglang==$ZIG_VERSION (into $venv)"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "ziglang==$ZIG_VERSION" >/dev/null \
            || die "pip install ziglang==$ZIG_VERSION failed"
    fi
    printf '%s\n' "$venv/bin/python"
}

# zig_triple RUST_TRIPLE: zig's -target and -mcpu for a Rust musl target.
zig_triple() {
    case $1 in
        x86_64-unknown-linux-musl) echo "x86_64-linux-musl baseline" ;;
        aarch64-unknown-linux-musl) echo "aarch64-linux-musl generic" ;;
        armv7-unknown-linux-musleabihf) echo "arm-linux-musleabihf generic+v7a+vfp3d16" ;;
        arm-unknown-linux-musleabihf) echo "arm-linux-musleabihf arm1176jzf_s" ;;
        *) die "no zig mapping for $1" ;;
    esac
}

# zig_linker RUST_TRIPLE: write a linker wrapper (zig cc for that target/CPU) and print its path.
# -Os -s -fno-sanitize=all are fixed so zig builds its musl once, not once per mode + UBSan.
zig_linker() {
    local py zm zt mcpu wrapper
    py=$(need_zig) || die "cannot set up zig"
    zm=$(zig_triple "$1") || die "no zig mapping for $1"
    zt=${zm% *} mcpu=${zm#* }
    wrapper=$TETHER_CACHE/zig/cc-$1
    mkdir -p "$TETHER_CACHE/zig/cache"
    cat >"$wrapper.tmp" <<WRAP
#!/bin/sh
# generated by scripts/lib.sh zig_linker: link $1 with zig's musl
export ZIG_GLOBAL_CACHE_DIR="$TETHER_CACHE/zig/cache" ZIG_LOCAL_CACHE_DIR="$TETHER_CACHE/zig/cache"
exec "$py" -m ziglang cc -target $zt -mcpu=$mcpu -Os -s -fno-sanitize=all "\$@"
WRAP
    chmod +x "$wrapper.tmp"
    mv -f "$wrapper.tmp" "$wrapper"
    printf '%s\n' "$wrapper"
}

# cargo_env_name RUST_TRIPLE: the CARGO_TARGET_<TRIPLE> prefix of cargo's per-target env vars.
cargo_env_name() { printf 'CARGO_TARGET_%s\n' "$(printf '%s' "$1" | tr 'a-z.-' 'A-Z__')"; }

# setup_target RUST_TRIPLE: choose how to build for the target and fill two arrays used as
#   env "${TARGET_ENV[@]}" cargo build --target T "${TARGET_ARGS[@]}"
# Plain route (rustup serves the target): rust-lld + prebuilt std, from .cargo/config.toml.
# Fallback (rustup cannot add it, or TETHER_BUILD_STD=1): -Zbuild-std=std,panic_abort on the
# stable toolchain (RUSTC_BOOTSTRAP=1) with rust-src, linked by zig cc (musl crt + libc).
# Sets TARGET_ROUTE to "rustup" or "build-std+zig".
setup_target() {
    local t=$1 pfx linker
    TARGET_ENV=()
    TARGET_ARGS=()
    if [ "${TETHER_BUILD_STD:-0}" != 1 ] && need_target "$t"; then
        TARGET_ROUTE=rustup
        return 0
    fi
    # Said once: build-all calls this again (TETHER_NO_INSTALL=1) for each build.
    [ -n "${TETHER_NO_INSTALL:-}" ] || say "$t: no prebuilt std from rustup here, using -Zbuild-std + zig"
    TARGET_ROUTE=build-std+zig
    need_rust_src
    linker=$(zig_linker "$t") || die "cannot write the zig linker wrapper for $t"
    pfx=$(cargo_env_name "$t")
    TARGET_ENV=(RUSTC_BOOTSTRAP=1 "${pfx}_LINKER=$linker" "${pfx}_RUSTFLAGS=-C link-self-contained=no")
    TARGET_ARGS=(-Zbuild-std=std,panic_abort)
}

# elf_check FILE RUST_TRIPLE: die unless FILE is a static ELF executable for that target:
# no PT_INTERP, no DT_NEEDED, right machine, right ARM architecture/float ABI.
elf_check() {
    local f=$1 t=$2 hdr want arch
    need_cmd readelf binutils
    hdr=$(readelf -hW "$f") || die "$f is not an ELF file"
    # `grep -q` reads here-strings, not pipes: under pipefail a `cmd | grep -q` fails when
    # grep exits at its match before cmd has written the rest (SIGPIPE, status 141).
    if grep -q 'INTERP' <<<"$(readelf -lW "$f")"; then die "$f has a PT_INTERP (dynamically linked)"; fi
    if grep -q '(NEEDED)' <<<"$(readelf -dW "$f")"; then die "$f has DT_NEEDED entries: $(readelf -dW "$f" | grep NEEDED)"; fi
    case $t in
        x86_64-*) want='X86-64' ;;
        aarch64-*) want='AArch64' ;;
        arm*) want='Machine: +ARM$' ;;
    esac
    grep -Eq "$want" <<<"$hdr" || die "$f: wrong machine, want $want: $(printf '%s\n' "$hdr" | grep Machine)"
    case $t in
        arm*)
            grep -q 'hard-float ABI' <<<"$hdr" || die "$f is not hard-float"
            arch=$(readelf -AW "$f" | sed -n 's/^ *Tag_CPU_arch: *//p')
            case $t in
                armv7-*) [ "$arch" = v7 ] || die "$f: Tag_CPU_arch is '$arch', want v7" ;;
                arm-*) case $arch in v6|v6K|v6KZ|v6Z) ;; *) die "$f: Tag_CPU_arch is '$arch', want ARMv6" ;; esac ;;
            esac ;;
    esac
}

# ---- packaging and the systemd test (scripts/package, scripts/test-systemd) ----

# crate_version: the package version from Cargo.toml's [package] section.
crate_version() {
    awk -F'"' '/^\[/{p = ($0 == "[package]")} p && /^version *=/{print $2; exit}' "$ROOT/Cargo.toml"
}

# host_debian_mirror: the Debian archive this machine's own apt uses (deb822 `URIs:` or a
# one-line `deb URI SUITE` entry), never a host written into the repo. Security archives skipped.
host_debian_mirror() {
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/{for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}')
    [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" {i = 2; if ($2 ~ /^\[/) while (i < NF && $i !~ /\]$/) i++; if ($2 ~ /^\[/) i++
                            if ($i !~ /security/) {print $i; exit}}')
    [ -n "$m" ] || return 1
    printf '%s\n' "$m"
}

# deb_triple ARCH: the Rust target whose binary a Debian architecture's package ships
# (armhf: the ARMv6 one, which runs on every Pi; Raspberry Pi OS's armhf is ARMv6).
deb_triple() {
    case $1 in
        amd64) echo x86_64-unknown-linux-musl ;;
        arm64) echo aarch64-unknown-linux-musl ;;
        armhf) echo arm-unknown-linux-musleabihf ;;
        *) die "unknown Debian architecture $1 (known: amd64 arm64 armhf)" ;;
    esac
}

# deb_qemu ARCH: the qemu-user name (qemu-NAME, binfmt_misc's qemu-NAME) that runs a
# Debian architecture's programs.
deb_qemu() {
    case $1 in
        amd64) echo x86_64 ;;
        arm64) echo aarch64 ;;
        armhf) echo arm ;;
        *) die "unknown Debian architecture $1 (known: amd64 arm64 armhf)" ;;
    esac
}
