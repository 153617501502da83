//! Prometheus metrics for the server and (opt-in) the client, through `prometheus-client`
//! (explicit registries, no global state, no hand-written exposition format). Counting happens in
//! the connection loops from what the machines report, never inside the core, and costs a few
//! atomic increments per event.

use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tether_core::client::{DisconnectCause, Event, RequestStatus, State};
use tether_core::server::{PeerError, ServerEvent, ServerStats};

/// One label: a code, kind, cause or outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// The value.
    pub kind: String,
}

fn label(kind: impl Into<String>) -> Label {
    Label { kind: kind.into() }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// The server's metrics. Cheap to clone (shared counters). On unless the server is started
/// with [`ServerMetrics::disabled`] (see `ServerOptions`).
#[derive(Clone)]
pub struct ServerMetrics {
    /// Behind a lock only so that [`ServerMetrics::store`] can register its family late.
    registry: Arc<Mutex<Registry>>,
    /// The session store's metrics, registered by the first [`ServerMetrics::store`] call.
    store: Arc<OnceLock<StoreMetrics>>,
    /// Whether the server counts at all (and `/metrics` answers).
    enabled: bool,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Sessions held (connected or awaiting resume).
    pub sessions: Gauge,
    /// Handshakes accepted, by `kind` = `created` | `resumed`.
    pub handshakes_accepted: Family<Label, Counter>,
    /// Handshakes and connections refused, by `kind` = the rejection code.
    pub handshakes_rejected: Family<Label, Counter>,
    /// Events the application published.
    pub events_published: Counter,
    /// Tracked frames written to sockets (live and replayed).
    pub events_delivered: Counter,
    /// Replay frames written to sockets.
    pub events_replayed: Counter,
    /// Resumes, by `kind` = `complete` | `loss_reported`.
    pub resumes: Family<Label, Counter>,
    /// Connections closed as slow consumers (1013).
    pub slow_consumer_evictions: Counter,
    /// Connections reaped for inbound silence (4002).
    pub reaped_connections: Counter,
    /// Bad input, by `kind` (decode, invalid_versions, invalid_value, unauthorized, ...).
    pub bad_input: Family<Label, Counter>,
    /// From a connection's attach to its resume handshake, in seconds.
    pub resume_latency: Histogram,
    /// From `publish` to the frame's write on the socket, in seconds.
    pub publish_to_write: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// A fresh registry with every server metric registered.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tether");
        let m = Self::disabled();
        r.register(
            "connections_open",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "sessions_live",
            "Sessions held (connected or awaiting resume)",
            m.sessions.clone(),
        );
        r.register(
            "handshakes_accepted",
            "Handshakes accepted, by kind (created, resumed)",
            m.handshakes_accepted.clone(),
        );
        r.register(
            "handshakes_rejected",
            "Handshakes refused, by rejection code",
            m.handshakes_rejected.clone(),
        );
        r.register(
            "events_published",
            "Events published by the application",
            m.events_published.clone(),
        );
        r.register(
            "events_delivered",
            "Tracked frames written to sockets (live and replayed)",
            m.events_delivered.clone(),
        );
        r.register(
            "events_replayed",
            "Replay frames written to sockets",
            m.events_replayed.clone(),
        );
        r.register(
            "resumes",
            "Resumes, by outcome (complete, loss_reported)",
            m.resumes.clone(),
        );
        r.register(
            "slow_consumer_evictions",
            "Connections closed as slow consumers (1013)",
            m.slow_consumer_evictions.clone(),
        );
        r.register(
            "reaped_connections",
            "Connections reaped for inbound silence (4002)",
            m.reaped_connections.clone(),
        );
        r.register(
            "bad_input",
            "Invalid frames from peers, by kind",
            m.bad_input.clone(),
        );
        r.register(
            "resume_latency_seconds",
            "From connection attach to resume handshake",
            m.resume_latency.clone(),
        );
        r.register(
            "publish_to_write_seconds",
            "From publish to the frame's socket write",
            m.publish_to_write.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(r)),
            enabled: true,
            ..m
        }
    }

    /// Metrics that are off: an empty registry; the server skips every count and
    /// measurement (the handles below exist but stay at zero) and `/metrics` answers 404.
    pub fn disabled() -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            store: Arc::new(OnceLock::new()),
            enabled: false,
            connections: Gauge::default(),
            sessions: Gauge::default(),
            handshakes_accepted: Family::default(),
            handshakes_rejected: Family::default(),
            events_published: Counter::default(),
            events_delivered: Counter::default(),
            events_replayed: Counter::default(),
            resumes: Family::default(),
            slow_consumer_evictions: Counter::default(),
            reaped_connections: Counter::default(),
            bad_input: Family::default(),
            resume_latency: latency_histogram(),
            publish_to_write: latency_histogram(),
        }
    }

    /// Whether these metrics count (false for [`ServerMetrics::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Counts what a server event says.
    pub fn observe(&self, event: &ServerEvent) {
        match event {
            ServerEvent::SessionCreated { .. } => {
                self.handshakes_accepted
                    .get_or_create(&label("created"))
                    .inc();
            }
            ServerEvent::SessionResumed { lost, .. } => {
                self.handshakes_accepted
                    .get_or_create(&label("resumed"))
                    .inc();
                let outcome = if lost.is_some() {
                    "loss_reported"
                } else {
                    "complete"
                };
                self.resumes.get_or_create(&label(outcome)).inc();
            }
            ServerEvent::ConnectionRejected { code, .. } => {
                self.handshakes_rejected
                    .get_or_create(&label(code.as_str()))
                    .inc();
            }
            ServerEvent::BadInput { error, .. } => {
                self.bad_input
                    .get_or_create(&label(peer_error_kind(error)))
                    .inc();
            }
            ServerEvent::Closing { code: 1013, .. } => {
                self.slow_consumer_evictions.inc();
            }
            ServerEvent::Closing { code: 4002, .. } => {
                self.reaped_connections.inc();
            }
            _ => {}
        }
    }

    /// Sets the gauges from the machine's counts (at scrape time).
    pub fn set_stats(&self, stats: &ServerStats) {
        self.connections.set(stats.connections as i64);
        self.sessions.set(stats.sessions as i64);
    }

    /// The session store's metrics (`tether_store_*`), registered with the server's on the
    /// first call: a store adapter (e.g. tether-redis) counts into them. Off when the server's
    /// metrics are off (the handles then stay unregistered).
    pub fn store(&self) -> &StoreMetrics {
        self.store.get_or_init(|| {
            let m = StoreMetrics::default();
            if self.enabled {
                let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                m.register(r.sub_registry_with_prefix("store"));
            }
            m
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// A session store's health and work, for the node running it (see [`ServerMetrics::store`]).
#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    /// 1 while the store answers, 0 while it is unreachable (`/ready` answers 503 then).
    pub up: Gauge,
    /// Events waiting for the store to number them.
    pub append_queue: Gauge,
    /// Store writes sent again after a failure (at most once applied: see the store's docs).
    pub retries: Counter,
    /// Notifications of new events received from the store.
    pub notifications: Counter,
    /// Held sessions found gone from the store (flushed, evicted, restarted empty); each
    /// closed its client's connection with 4010 `session_lost`.
    pub sessions_lost: Counter,
}

impl StoreMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "up",
            "1 while the session store answers, 0 while it is unreachable",
            self.up.clone(),
        );
        r.register(
            "append_queue",
            "Events waiting for the session store to number them",
            self.append_queue.clone(),
        );
        r.register(
            "retries",
            "Session store writes sent again after a failure",
            self.retries.clone(),
        );
        r.register(
            "notifications",
            "Notifications of new events received from the session store",
            self.notifications.clone(),
        );
        r.register(
            "sessions_lost",
            "Held sessions found gone from the session store",
            self.sessions_lost.clone(),
        );
    }
}

fn peer_error_kind(e: &PeerError) -> &'static str {
    match e {
        PeerError::Decode(_) => "decode",
        PeerError::InvalidVersions(_) => "invalid_versions",
        PeerError::InvalidValue { .. } => "invalid_value",
        PeerError::Unauthorized => "unauthorized",
        PeerError::HandshakeTimeout => "handshake_timeout",
        PeerError::Flood => "flood",
        _ => "other",
    }
}

/// The client's metrics: off unless the application passes one to the client (and exposes its
/// registry, e.g. `tether connect --metrics-addr`).
#[derive(Clone)]
pub struct ClientMetrics {
    registry: Arc<Registry>,
    /// Reconnects, by `kind` = the cause of the disconnect.
    pub reconnects: Family<Label, Counter>,
    /// Seconds spent without a connection.
    pub disconnected_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Live gaps detected (repaired when the server still held the events).
    pub gaps_detected: Counter,
    /// Events reported lost (the server no longer held them).
    pub events_lost: Counter,
    /// Duplicates and stale frames dropped.
    pub duplicates_dropped: Counter,
    /// Tracked events delivered.
    pub events_delivered: Counter,
    /// Request outcomes, by `kind` = `final` | `duplicate` | `ambiguous`.
    pub request_outcomes: Family<Label, Counter>,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientMetrics {
    /// A fresh registry with every client metric registered.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tether_client");
        let m = Self {
            registry: Arc::new(Registry::default()),
            reconnects: Family::default(),
            disconnected_seconds: Counter::default(),
            gaps_detected: Counter::default(),
            events_lost: Counter::default(),
            duplicates_dropped: Counter::default(),
            events_delivered: Counter::default(),
            request_outcomes: Family::default(),
        };
        r.register("reconnects", "Reconnects, by cause", m.reconnects.clone());
        r.register(
            "disconnected_seconds",
            "Time spent without a connection",
            m.disconnected_seconds.clone(),
        );
        r.register(
            "gaps_detected",
            "Live gaps detected",
            m.gaps_detected.clone(),
        );
        r.register("events_lost", "Events reported lost", m.events_lost.clone());
        r.register(
            "duplicates_dropped",
            "Duplicates and stale frames dropped",
            m.duplicates_dropped.clone(),
        );
        r.register(
            "events_delivered",
            "Tracked events delivered",
            m.events_delivered.clone(),
        );
        r.register(
            "request_outcomes",
            "Request outcomes",
            m.request_outcomes.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts what a client event says.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::Delivered(_) => {
                self.events_delivered.inc();
            }
            Event::Gap { .. } => {
                self.gaps_detected.inc();
            }
            Event::Lost { from, to } => {
                self.events_lost.inc_by(to.saturating_sub(*from) + 1);
            }
            Event::StateChanged(State::Disconnected { cause }) => {
                self.reconnects
                    .get_or_create(&label(cause_kind(cause)))
                    .inc();
            }
            Event::Request(u) => {
                let kind = match u.status {
                    RequestStatus::Final { .. } => "final",
                    RequestStatus::Duplicate { .. } => "duplicate",
                    RequestStatus::Ambiguous => "ambiguous",
                    _ => return,
                };
                self.request_outcomes.get_or_create(&label(kind)).inc();
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn cause_kind(cause: &DisconnectCause) -> &'static str {
    match cause {
        DisconnectCause::ConnectFailed(_) => "connect_failed",
        DisconnectCause::Closed { .. } => "closed",
        DisconnectCause::HandshakeTimeout => "handshake_timeout",
        DisconnectCause::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectCause::Rejected(_) => "rejected",
        DisconnectCause::GapRepair => "gap_repair",
        _ => "other",
    }
}
