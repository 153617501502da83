//! tether over async-std / smol + async-tungstenite (in progress: see issue 5). Re-exports the core for now.
pub use tether_core as core;
