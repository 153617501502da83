//! How a node reaches Redis, names its keys, and rides out Redis faults.

use std::time::Duration;

/// How a node reaches Redis, names its keys, and rides out Redis faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` of a single Redis (unused with [`RedisConfig::cluster_nodes`]).
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each); empty for a single Redis.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key and channel (several gateways can share one Redis). No `{` or `}`.
    pub prefix: String,
    /// How long a client stays in presence after its node stops refreshing it (a killed node's
    /// clients disappear within this).
    pub presence_ttl: Duration,
    /// Longest wait for a connection to Redis (default 1 s).
    pub connect_timeout: Duration,
    /// Longest wait for Redis's reply to a command (default 2 s); then the command is sent
    /// again (appends are applied at most once).
    pub response_timeout: Duration,
    /// Longest delay between reconnect attempts and between retries of a store write while
    /// Redis is unreachable (default 200 ms).
    pub reconnect_max: Duration,
    /// Store writes (events, in practice) that may wait for Redis; when full, publishers wait
    /// while Redis answers and get [`StoreError::Backlogged`](crate::StoreError::Backlogged) while it does not. Default 65,536.
    pub append_queue: usize,
    /// What to do when Redis may evict tether's keys (see the crate docs).
    pub eviction: EvictionCheck,
}

/// What a node does at start when Redis's `maxmemory-policy` may evict its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionCheck {
    /// Log a warning and serve.
    #[default]
    Warn,
    /// Refuse to start ([`StoreError::Evicting`](crate::StoreError::Evicting)).
    Refuse,
}

impl RedisConfig {
    /// A single Redis at `url`. Defaults: prefix `tether`, presence TTL 10 s, connect timeout
    /// 1 s, response timeout 2 s, reconnect delays up to 200 ms, 65,536 queued events, warn on
    /// an evicting policy.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster_nodes: Vec::new(),
            prefix: "tether".into(),
            presence_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            reconnect_max: Duration::from_millis(200),
            append_queue: 65_536,
            eviction: EvictionCheck::Warn,
        }
    }

    /// A Redis Cluster reached through `nodes` (any of its masters; the rest is discovered),
    /// with the defaults of [`RedisConfig::new`].
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..Self::new("")
        }
    }
}
