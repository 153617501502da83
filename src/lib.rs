//! tether: the workspace root package. It holds the `tether` command-line binary
//! (`src/main.rs`, `src/cli/`) and the cross-adapter integration tests. As a library it
//! re-exports the core and holds the two tools the CLI's `check` and `proxy` are shells over,
//! so that users can run them from their own `cargo test`:
//!
//! - [`check`]: a conformance suite for any gateway that speaks the protocol (v1 = PraisonAI,
//!   v2 = tether): `check(url, options) -> Report`;
//! - [`proxy`]: a seeded, replayable, protocol-aware fault proxy to put between a client and
//!   a server.
pub use tether_core as core;

pub mod check;
pub mod proxy;
