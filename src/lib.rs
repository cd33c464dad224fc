//! tether: a tiny network agent for embedded Linux boards.
//!
//! ```text
//!   main.rs ─ cli ─┬─ daemon ── runloop ──┬── agent ── facts      (IO-free core)
//!                  │            (poll)    ├── metrics ─ agent     (IO-free: /metrics body)
//!                  │                      │      └──── proto      (IO-free wire layer)
//!                  ├─ ctl (+ ctl::pretty) ├── links ─── beacon ── proto::beacon
//!                  │                      │   (sockets)  (IO-free: one Link per interface)
//!                  └─ scan (poll) ─ render ─ boards   └── sys (nix: sockets, signals, ioctl, /proc)
//!                     (sockets, files)        (IO-free table and trust rules, fuzzed)
//!   exit: Fatal and the exit codes, for main.rs and the three subcommands
//! ```
//!
//! Layers and who may import whom:
//! - [`proto`] and [`limits`] import nothing of tether's but each other and [`crypto`]
//!   (HMAC-SHA256 for beacon tags): pure functions over bytes, no I/O, no clock, no heap,
//!   no panics (fuzzed).
//! - [`agent`] and [`facts`] are the IO-free core; time comes in as `now`, the world
//!   through the [`agent::Env`] trait.
//! - [`metrics`] renders `/metrics` from the core's state: IO-free like it.
//! - [`beacon`] is the beacon's sans-IO state machine (one `Link` per interface): driven
//!   by `now`, interface readings and datagrams, it returns datagrams to send and its next
//!   deadline; `runloop::links` owns its sockets.
//! - [`sys`] is the only module that calls nix's socket/signal/ioctl APIs; it reads and
//!   writes the OS, and leaves every wire format to [`proto`].
//! - [`runloop`] is the agent's only caller of poll(2) and owns every fd of the agent.
//!   The client `tether scan` has a small poll of its own over its UDP sockets; its board
//!   table (`scan::boards`: every datagram through `Boards::ingest(d, from, now)`) is
//!   IO-free like [`beacon`], and `scan::render` turns the rows into text.
//! - [`daemon`], [`ctl`], [`scan`] are the subcommands; none imports another. [`cli`]
//!   validates their options; [`exit`] holds [`exit::Fatal`] and every exit code, and
//!   `main.rs` prints the one `error:` line and exits with the code.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
pub mod alloc_count;
pub mod beacon;
pub mod cli;
pub mod crypto;
pub mod ctl;
pub mod daemon;
pub mod exit;
pub mod facts;
pub mod id;
pub mod limits;
pub mod lograte;
pub mod metrics;
pub mod proto;
pub mod runloop;
pub mod scan;
pub mod sys;
