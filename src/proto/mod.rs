//! The wire layer: pure functions over bytes. No I/O, no clock, no heap, no panics.
//!
//! Contract (checked by the unit tests, by `tests/parser_random.rs` and by the cargo-fuzz
//! targets in `fuzz/fuzz_targets/`): every function here accepts any byte slice and
//! returns a value or an error; none indexes out of bounds or overflows. Writers write into caller-owned fixed buffers and report
//! overflow instead of growing.
//!
//! - [`line`]: splitting a client's byte stream into request lines.
//! - [`request`]: one line -> [`request::Request`] (an enum; never a chain of string compares).
//! - [`reply`]: the fixed reply vocabulary (`PONG`, `OK ...`, `ERR <code> <text>`).
//! - [`swar`]: eight bytes at a time (a line's end, a command word) in one integer.
//! - [`hex`]: lowercase hex encoding and strict decoding.
//! - [`wbuf`] / [`json`]: a fixed-size `fmt::Write` buffer and JSON string escaping.
//! - [`fixed`]: a float with N decimals as `{:.N}` writes it, without core's float formatting;
//!   [`decimal`]: a decimal number's value, without core's float parser.
//! - [`sockets`]: one SOCKETS item (a socket's address and options) as JSON.
//! - [`beacon`]: the beacon datagram and scan probe, their HMAC tags, and the reader
//!   for the flat JSON objects tether itself emits (used by `tether scan`).
//! - [`http`] / [`prom`]: the HTTP/1.1 request head parser and response heads for
//!   `/metrics`, and the Prometheus text format writers (label escaping).

pub mod beacon;
pub mod decimal;
pub mod fixed;
pub mod hex;
pub mod json;
pub mod line;
pub mod reply;
pub mod request;
pub mod sockets;
pub mod swar;
pub mod wbuf;

// `/metrics` over HTTP (`--metrics`).
pub mod http;
pub mod prom;
