#![forbid(unsafe_code)]
#![doc = "tether-core (docs in progress)"]
pub mod backoff;
pub mod heartbeat;
pub mod rng;
pub mod server;
pub mod version;
pub mod wire;
