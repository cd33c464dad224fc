//! Every size and capacity of tether in one place, checked at compile time.
//!
//! Nothing here does I/O. Changing a number here is the only way to change a buffer size;
//! the asserts at the bottom keep the numbers consistent with each other.

/// Longest request line, in bytes, not counting the terminating `\n` (or `\r\n`).
pub const LINE_MAX: usize = 255;
/// Per-client input buffer: one maximal line plus `\r\n`.
pub const IN_BUF: usize = LINE_MAX + 2;
/// Largest single reply line, `\n` included. STATUS with a full fact table is the largest.
pub const REPLY_MAX: usize = 8192;
/// Per-client output buffer. A client whose unread replies exceed this is closed.
pub const OUT_BUF: usize = 16384;

/// Compile-time capacity of the client table (TCP and Unix clients together).
pub const MAX_CLIENTS: usize = 16;
/// Default for `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = MAX_CLIENTS;
/// How many `--listen` addresses the agent accepts.
pub const MAX_LISTENERS: usize = 4;
/// Default listen backlog (`--backlog`): small, as embedded servers have.
pub const DEFAULT_BACKLOG: u16 = 8;
/// Default idle timeout in seconds (`--idle-timeout`).
pub const DEFAULT_IDLE_SECS: u32 = 60;

/// Fact table capacity and shapes.
pub const MAX_FACTS: usize = 32;
pub const KEY_MAX: usize = 32;
pub const VALUE_MAX: usize = 64;
/// Longest `ttl=` a fact may carry (one year).
pub const TTL_MAX_SECS: u32 = 365 * 24 * 3600;

/// AUTH token: at most this many bytes are read from `--token-file`.
pub const TOKEN_MAX: usize = 128;
/// Fleet key (`--fleet-key`): bytes after trimming whitespace, at least and at most.
pub const FLEET_KEY_MIN: usize = 16;
pub const FLEET_KEY_MAX: usize = 256;
/// A client that failed AUTH has its next line held back this long.
pub const AUTH_FAIL_DELAY_MS: u64 = 1000;
/// Across all clients, at most this many failed AUTHs per second are checked;
/// beyond it AUTH answers `ERR busy` without comparing.
pub const AUTH_FAILS_PER_SEC: u32 = 5;
/// A challenge nonce (`AUTH` alone) is valid this long, once, on its own connection.
pub const AUTH_NONCE_SECS: u64 = 30;
/// Random bytes in a challenge nonce (sent as twice as many lowercase hex digits).
pub const AUTH_NONCE_BYTES: usize = 16;

/// Beacon datagram and probe size (both directions), in bytes.
pub const DATAGRAM_MAX: usize = 512;
/// Default beacon port and interval.
pub const DEFAULT_BEACON_PORT: u16 = 4546;
pub const DEFAULT_INTERVAL_SECS: u32 = 5;
/// Bounds for `--interval` and `INTERVAL n`.
pub const INTERVAL_MIN_SECS: u32 = 1;
pub const INTERVAL_MAX_SECS: u32 = 3600;
/// Probe answers: a token bucket of this many replies, refilled at this rate per second.
pub const PROBE_BURST: u32 = 8;
pub const PROBE_PER_SEC: u32 = 4;

/// IDENTIFY: default and longest blink, and the half-period of the blink.
pub const IDENTIFY_DEFAULT_SECS: u32 = 15;
pub const IDENTIFY_MAX_SECS: u32 = 3600;
pub const IDENTIFY_HALF_PERIOD_MS: u64 = 250;

/// Interface names (IFNAMSIZ - 1) and how many addresses STATUS lists.
pub const IFNAME_MAX: usize = 15;
pub const MAX_ADDRS: usize = 16;
/// Longest hostname we report (HOST_NAME_MAX).
pub const HOST_MAX: usize = 64;
/// Longest Unix socket path (sun_path minus the NUL).
pub const SOCK_PATH_MAX: usize = 107;

/// Rate limit for operator warnings that can repeat (interface flaps...).
pub const WARN_EVERY_SECS: u64 = 60;

const _: () = assert!(IN_BUF >= LINE_MAX + 2);
const _: () = assert!(OUT_BUF >= REPLY_MAX);
const _: () = assert!(DEFAULT_MAX_CLIENTS <= MAX_CLIENTS);
// STATUS lists every fact escaped at worst twice its size, plus the fixed fields and addresses.
const _: () =
    assert!(REPLY_MAX >= MAX_FACTS * (KEY_MAX + 2 * VALUE_MAX + 6) + MAX_ADDRS * 64 + 1024);
const _: () = assert!(DATAGRAM_MAX >= 256);
