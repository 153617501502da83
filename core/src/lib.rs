//! # tether-core
//!
//! The sans-IO protocol core of tether: everything that keeps a real-time gateway connection
//! alive and lossless, as deterministic state machines fed by frames and timestamps.
//!
//! * [`version`]: protocol version ranges and negotiation (v1 = the PraisonAI gateway, v2 = tether).
//! * [`sequence`]: gap and duplicate detection over per-session sequence numbers.
//! * [`cursor`]: the resume position ([`cursor::ResumeState`]) an application can persist.
//! * [`backoff`]: reconnect schedules with jitter, `retry_after` floors, caps, and a restart from
//!   the first delay after every completed handshake.
//! * [`heartbeat`]: ping schedule and silence watchdog.
//! * [`wire`]: the JSON frames and their codec.
//! * [`client`]: the client connection machine composing all of the above.
//! * [`server`]: the server machine: sessions, stamping, recovery window, resume, presence, health.
//!
//! The test machinery is not here: the deterministic simulator, the fuzz bodies and the proptest
//! strategies that check the guarantees below live in the `tether-testkit` crate.
//!
//! ## Guarantees
//! * **No IO, no clock, no global randomness.** Time is always a `now` argument; randomness comes
//!   from a seed in the config. Same inputs, same outputs: every run replays. (Enforced by
//!   clippy's `disallowed-methods` in `core/clippy.toml`; `cargo tree -p tether-core` shows no
//!   async runtime and no WebSocket library.)
//! * **No panics on peer input.** Bad frames become typed [`wire::DecodeError`]s reported as
//!   events; the connection goes on.
//! * **Delivery.** Tracked events reach the application at most once and in increasing sequence
//!   order; every hole is either repaired (replayed by the server) or reported as
//!   [`client::Event::Lost`] — never silently skipped.
//!
//! ## Driving a client by hand
//! An adapter is a loop around four calls. Here the "server" is a few literal frames: a hello, two
//! events, a dropped socket, and a resume that replays what was missed.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tether_core::client::{Client, ClientConfig, Event, Transmit};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let mut now = Instant::now(); // the adapter's clock; the core never reads one itself
//! let mut client = Client::new(ClientConfig::new("echo"), now);
//! assert_eq!(client.poll_transmit(), Some(Transmit::Open)); // open a socket, then:
//! client.handle_connected(now);
//! let Some(Transmit::Frame(hello)) = client.poll_transmit() else { panic!() };
//! assert!(hello.starts_with(r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2"#));
//!
//! // The PraisonAI server answers v1 and streams tracked events.
//! client.handle_text(now, r#"{"type":"hello_ok","protocol":1,"session_id":"s1","resumed":false,"cursor":0}"#);
//! client.handle_text(now, r#"{"type":"message","content":"one","cursor":1,"seq":1}"#);
//! client.handle_text(now, r#"{"type":"message","content":"two","cursor":2,"seq":2}"#);
//!
//! // The socket dies; the client schedules a reconnect (first retry waits `backoff.initial`).
//! client.handle_closed(now, None, "connection reset");
//! now += Duration::from_secs(2);
//! client.handle_timeout(now);
//! assert_eq!(client.poll_transmit(), Some(Transmit::Open));
//! client.handle_connected(now);
//! let Some(Transmit::Frame(resume)) = client.poll_transmit() else { panic!() };
//! assert!(resume.contains(r#""session_id":"s1","since":2"#)); // rejoin since the cursor
//!
//! // The server replays event 3, produced while we were away; 2 is a duplicate and is dropped.
//! client.handle_text(now, r#"{"type":"hello_ok","protocol":1,"session_id":"s1","resumed":true,"cursor":3}"#);
//! client.handle_text(now, r#"{"type":"replay","event":{"type":"message","data":{"type":"message","content":"three","cursor":3,"seq":3},"source":"gateway","target":null,"sequence":3}}"#);
//! client.handle_text(now, r#"{"type":"message","content":"two","cursor":2,"seq":2}"#);
//!
//! let mut delivered = Vec::new();
//! while let Some(event) = client.poll_event() {
//!     match event {
//!         Event::Delivered(d) => delivered.push(d.seq),
//!         Event::Gap { .. } | Event::Lost { .. } => panic!("no gap on a clean resume"),
//!         _ => {} // state changes: connecting, connected, disconnected, reconnecting
//!     }
//! }
//! assert_eq!(delivered, [1, 2, 3]);
//! assert_eq!(client.stats().duplicates, 1);
//! ```
#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod cursor;
pub mod heartbeat;
#[cfg(feature = "injected-bugs")]
pub mod injected_bugs;
pub mod rng;
pub mod sequence;
pub mod server;
pub mod version;
pub mod wire;

/// The one clock read of the unit tests: an arbitrary origin for their timelines (written as
/// `t0 + 5s`). Production code never reads a clock; this exists only under `cfg(test)`.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_origin() -> std::time::Instant {
    std::time::Instant::now()
}
