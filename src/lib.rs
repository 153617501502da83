//! tether: the workspace root package. It holds the `tether` command-line binary
//! (`src/main.rs`, `src/cli/`) and the cross-adapter integration tests; as a library it only
//! re-exports the core.
pub use tether_core as core;
