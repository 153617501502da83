//! Server configuration: limits, timers, versions and the seed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::version::VersionRange;

/// Everything the [`Server`](super::Server) needs to know up front. `Default` gives the
/// reference server's figures where it has them (PROTOCOL.md §3.2, §7, §10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Versions this server speaks; v2 is negotiated only when the client offers max ≥ 2.
    pub versions: VersionRange,
    /// Registered agent ids. Empty = any non-empty `agent_id` is accepted.
    pub agents: Vec<String>,
    /// Seed of the one PRNG (session ids, event ids, request ids). `None` (the default): the
    /// adapter draws one from OS entropy, as production needs (session ids are bearer
    /// capabilities and must be unguessable); a machine built directly with `None` uses the
    /// all-zero seed. For tests, [`crate::rng::seed_from_u64`].
    pub seed: Option<[u8; 32]>,
    /// Wall-clock time (epoch seconds) at the `now` given to `Server::new`/`restore`; frame
    /// timestamps, uptime and presence `last_seen` are derived from it and `now`.
    pub epoch_at_start: f64,
    /// Built-in shared-token check on `?token=` (constant time). `None` = everyone is admitted
    /// as the principal `anonymous` (loopback/dev use); install an
    /// [`Authenticator`](super::Authenticator) for real per-user principals.
    pub auth_token: Option<String>,
    /// A connection without a valid handshake after this long is closed (slow-loris guard).
    pub handshake_timeout: Duration,
    /// Ping interval after the handshake (advertised as `policy.heartbeat_ms`); `None` disables
    /// pings and reaping (as `None` in the client's `fallback_heartbeat`).
    pub heartbeat_interval: Option<Duration>,
    /// Reap after `heartbeat_interval × missed_beats` of inbound silence (close
    /// [`wire::close::LIVENESS_TIMEOUT`](crate::wire::close::LIVENESS_TIMEOUT)).
    pub missed_beats: u32,
    /// How long a session outlives its last connection before it expires.
    pub session_ttl: Duration,
    /// Most sessions held; at the cap the longest-detached one is expired to make room.
    pub max_sessions: usize,
    /// Most simultaneous connections; beyond it `handle_connected` rejects (`rate_limited`).
    pub max_connections: usize,
    /// The recovery window: how long a tracked event stays available for a resume (default
    /// 120 s, Socket.IO's `maxDisconnectionDuration` and Ably's two minutes). This is the
    /// promise; the three `recovery_*` bounds below are safety limits on memory.
    ///
    /// The rule: an event is retained while it is younger than `recovery_window` **and** none
    /// of the bounds needs its room. Whichever limit is reached first evicts, oldest first:
    /// age, the session's events or bytes (only that session's oldest events), or the total
    /// across sessions (the oldest events of the whole server). A resume asking for an evicted
    /// event is told exactly which ones it lost (`hello_ok.resync_required`, `replay_end`'s
    /// `lost_from`/`lost_to`, the v1 gap); a connected client that was not sent an event
    /// before it was evicted is closed as a slow consumer ([`wire::close::SLOW_CONSUMER`](crate::wire::close::SLOW_CONSUMER)) and learns the loss on its
    /// resume. Nothing is skipped silently. An event is freed within about a second after it
    /// ages out (at once when a bound evicts it).
    pub recovery_window: Duration,
    /// Safety limit per session: most events retained (default 1,048,576; the newest event is
    /// always kept). A cap for stores that trim by count (the Redis store's log length).
    pub recovery_session_events: usize,
    /// Safety limit per session: bytes of its retained events (default 64 MiB; an event
    /// published to many sessions counts in full in each, plus a small index per run of
    /// consecutive events; the newest event is always kept).
    pub recovery_session_bytes: usize,
    /// Safety limit across all sessions: bytes held by the shared event log, each event
    /// counted once however many sessions it went to (default 1 GiB; the newest event is
    /// always kept).
    pub recovery_total_bytes: usize,
    /// Largest inbound text frame, bytes, advertised as `policy.max_payload` (typed error +
    /// close [`wire::close::MESSAGE_TOO_BIG`](crate::wire::close::MESSAGE_TOO_BIG) beyond
    /// it).
    pub max_frame_bytes: usize,
    /// In-flight window per connection, frames (handed out by `poll_transmit`, not yet
    /// confirmed by `handle_sent`).
    pub max_queued_frames: usize,
    /// In-flight window per connection, wire bytes.
    pub max_buffered_bytes: usize,
    /// Untracked frames (pong, errors, broadcasts) queued per connection before it is a slow
    /// consumer.
    pub max_control_frames: usize,
    /// Request ids remembered per session for duplicate detection.
    pub dedup_max: usize,
    /// How long a request id is remembered.
    pub dedup_ttl: Duration,
    /// Frames of unknown type tolerated per connection before close
    /// [`wire::close::UNKNOWN_FRAME_FLOOD`](crate::wire::close::UNKNOWN_FRAME_FLOOD) (duplicates of known
    /// requests never count).
    pub max_unknown_frames: u32,
    /// Most presence entries sent in a v2 `hello_ok` / `joined` (the full list is `presence()`):
    /// keeps a handshake's cost flat however many clients are connected.
    pub handshake_presence_limit: usize,
    /// Sessions live in a store shared by several nodes (see the
    /// [`store` section](super::Server::handle_store_session)): resumes ask the store, tracked frames
    /// get their sequence from it, request ids are checked in it. Off = this machine holds and
    /// numbers every session itself (the embedded default).
    pub external_store: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            versions: VersionRange::TETHER,
            agents: Vec::new(),
            seed: None,
            epoch_at_start: 0.0,
            auth_token: None,
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Some(Duration::from_secs(30)),
            missed_beats: 2,
            session_ttl: Duration::from_secs(3600),
            max_sessions: 10_000,
            max_connections: 10_000,
            recovery_window: Duration::from_secs(120),
            recovery_session_events: 1 << 20,
            recovery_session_bytes: 64 << 20,
            recovery_total_bytes: 1 << 30,
            max_frame_bytes: 1 << 20,
            max_queued_frames: 1000,
            max_buffered_bytes: 1 << 20,
            max_control_frames: 256,
            dedup_max: 1000,
            dedup_ttl: Duration::from_secs(24 * 3600),
            max_unknown_frames: 100,
            handshake_presence_limit: 4,
            external_store: false,
        }
    }
}
