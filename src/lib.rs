//! tether: a tiny network agent for embedded Linux boards.
//!
//! ```text
//!   main.rs ─ cli ─┬─ daemon ── runloop ──┬── agent ── facts      (IO-free core)
//!                  │            (poll)    ├── metrics ─ agent     (IO-free: /metrics body)
//!                  │                      │      └──── proto      (IO-free wire layer)
//!                  ├─ ctl                 ├── beacon ── proto::beacon
//!                  └─ scan                └── sys (nix: sockets, signals, ioctl, /proc)
//! ```
//!
//! Layers and who may import whom:
//! - [`proto`] and [`limits`] import nothing of tether's but each other and [`crypto`]
//!   (HMAC-SHA256 for beacon tags): pure functions over bytes, no I/O, no clock, no heap,
//!   no panics (fuzzed).
//! - [`agent`] and [`facts`] are the IO-free core; time comes in as `now`, the world
//!   through the [`agent::Env`] trait.
//! - [`metrics`] renders `/metrics` from the core's state: IO-free like it.
//! - [`sys`] is the only module that calls nix's socket/signal/ioctl APIs.
//! - [`runloop`] is the only caller of poll(2) and owns every fd.
//! - [`daemon`], [`ctl`], [`scan`] are the subcommands; `main.rs` maps their errors to
//!   exit codes.

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
pub mod metrics;
pub mod proto;
pub mod runloop;
pub mod scan;
pub mod sys;
