# Shared shell helpers for scripts/*. Source it: . "$(dirname "$0")/lib.sh"
# Every install step the project needs lives here, so a brand-new machine (or CI) needs
# nothing done by hand. Each helper is idempotent and cheap when the thing is already there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# apt_update: run `apt-get update` at most once per boot/run (stamp in /tmp).
# A foreign-architecture list may fail to load (exit 100) while the main lists load: tolerate it.
apt_update() {
    local stamp=/tmp/.tether-apt-updated
    [ -e "$stamp" ] && return 0
    say "apt-get update"
    as_root apt-get update -qq >/dev/null 2>&1 || say "apt-get update exited non-zero (tolerated)"
    touch "$stamp"
}

# need_cmd CMD DEBIAN_PACKAGE...: install the packages when CMD is missing.
need_cmd() {
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and there is no apt-get: install $* by hand"
    apt_update
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || die "installed $* but $cmd is still missing"
}

# need_target TRIPLE: rustup target add, returns non-zero (without dying) when rustup cannot serve it.
need_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1" && return 0
    say "rustup target add $1"
    rustup target add "$1" >/dev/null 2>&1
}
