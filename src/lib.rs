//! tether: the workspace root package (CLI and cross-adapter tests land here). Re-exports the core.
pub use tether_core as core;
