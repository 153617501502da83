//! tether over tokio + tokio-tungstenite (in progress: see issue 4). Re-exports the core for now.
pub use tether_core as core;
