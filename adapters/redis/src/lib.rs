//! tether's multi-node session store on Redis (a single instance or Redis Cluster).
//!
//! One gateway process keeps its sessions in memory. Several gateway nodes behind a load
//! balancer share them through Redis instead, so a client that reconnects to another node
//! resumes exactly where it was:
//!
//! | what | Redis | key |
//! |---|---|---|
//! | session metadata: agent, owner principal, epoch, version, **head** (last sequence) | hash | `{prefix}:{sid}:s` |
//! | the replay log, trimmed to the server's `recovery_session_events` | stream, entry id `{seq}-0` | `{prefix}:{sid}:log` |
//! | the range each append run was given (applied at most once) | string with TTL | `{prefix}:{sid}:run:{run id}` |
//! | request ids seen (a node's claim) and their outcomes (JSON), for `dedup_ttl` | string with TTL | `{prefix}:{sid}:req:{request_id}` |
//! | new events, for the node holding the session's connection only | shard channel (`SPUBLISH`) | `{prefix}:{sid}:n` |
//! | presence: each node's connected clients, refreshed every `presence_ttl / 3` | string with TTL, and a set of nodes | `{prefix}:presence:{node}`, `{prefix}:nodes` |
//!
//! Every key of a session carries the session id as its hash tag (`{sid}`), so on Redis
//! Cluster all of them live in one slot: one Lua script numbers and appends atomically
//! (`HINCRBY head` + `XADD` + trim + `SPUBLISH`), sent by its SHA1 (`EVALSHA`). Any node may
//! publish to any session and numbers stay gap-free; only the node holding the session's
//! connection subscribes to its channel (`SSUBSCRIBE`), so the notifications a node receives
//! do not grow with the number of nodes. A missed notification shows up as a gap at the next
//! one and is read back from the log. The server machine runs in store mode
//! ([`ServerConfig::external_store`](tether_core::server::ServerConfig::external_store)): see `tether_core::server::StoreRequest`.
//!
//! # What a fault of Redis does
//! - **Outage** (restart, failover, dropped connection): the node reconnects with a backoff
//!   capped at [`RedisConfig::reconnect_max`], every command has [`RedisConfig::response_timeout`].
//!   `GET /ready` answers 503 (`"failing":["store"]`) and the `tether_store_up` metric is 0
//!   until Redis answers again; connected clients stay connected and are told nothing,
//!   because nothing is lost: every store write waits in a bounded queue
//!   ([`RedisConfig::append_queue`] events) and is sent again until Redis answers. Each append
//!   run carries an id; the script records the range it gave that id, so a run whose reply
//!   was lost is not numbered twice. Publishers wait meanwhile; when the queue is full while
//!   Redis is down they get [`StoreError::Backlogged`].
//! - **Data lost in Redis** (`FLUSHALL`, eviction, a restart without persistence): the node
//!   holding a session that vanished closes its connection with 4010 `session_lost`, at once
//!   and with one log line; the client reconnects, and its resume reports `SessionReplaced`
//!   (its pending requests resolve as ambiguous). Publishers to it get
//!   [`StoreError::UnknownSession`].
//! - **Eviction**: run Redis with `maxmemory-policy noeviction`. tether's keys all have TTLs,
//!   so any other policy (even `volatile-*`) may evict a live session under memory pressure,
//!   which its client then sees as `SessionReplaced`. With `noeviction`, a full Redis refuses
//!   writes instead: the node treats that as an outage (publishers wait or get
//!   [`StoreError::Backlogged`]) and nothing is lost. At start the node reads the policy
//!   and warns, or refuses to start with [`EvictionCheck::Refuse`].
//!
//! Requires Redis ≥ 7.0 (sharded pub/sub, `SET ... NX GET`). Redis Cluster: give the seed
//! nodes with [`RedisConfig::cluster`]. Sentinel is not supported: run Redis Cluster (with
//! replicas) for failover.
//!
//! A node runs on any runtime of `tether-driver` (tokio, async-std, smol): its loops are
//! spawned on the runtime given to [`serve`] or [`RedisNode::start`], and the Redis client
//! uses tokio's runtime inside one and smol's executor (beside any other) elsewhere.
//!
//! Two nodes on one Redis: a client connected to node A gets an event published through node B.
//! ([`testing::RedisServer`] uses `TETHER_REDIS_URL`, or starts a `redis-server` of its own.)
//!
//! ```
//! use futures::StreamExt;
//! use tether_core::client::{ClientConfig, Event, State};
//! use tether_core::server::{ServerConfig, SessionId};
//! use tether_redis::{serve, testing::RedisServer, RedisConfig};
//! use tether_tokio::{connect, ConnectOptions, ServerOptions, TokioRuntime};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let redis = RedisServer::for_tests();
//!     let config = || RedisConfig::new(redis.url.clone());
//!     let options = ServerOptions::default;
//!     let bind = |config| tether_tokio::serve(TokioRuntime, "127.0.0.1:0", config, options());
//!     let (a, _node_a) = serve(TokioRuntime, ServerConfig::default(), config(), bind).await?;
//!     let (_b, node_b) = serve(TokioRuntime, ServerConfig::default(), config(), bind).await?;
//!
//!     let url = format!("ws://{}/ws", a.local_addr);
//!     let options = ConnectOptions::default();
//!     let (client, mut events) = connect(TokioRuntime, url, ClientConfig::new("echo"), options)?;
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::StateChanged(State::Connected { session_id, .. }) => {
//!                 let fields = vec![("text".to_owned(), "from node B".into())];
//!                 node_b.publish(&SessionId(session_id), "message", fields).await?;
//!             }
//!             Event::Delivered(e) => {
//!                 assert!(e.payload.as_str().contains("from node B"));
//!                 client.disconnect().await;
//!             }
//!             Event::Closed(_) => break,
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
mod health;
mod keys;
mod link;
mod node;
mod presence;
mod requests;
mod subscriber;
mod subscriptions;
pub mod testing;
mod wire;
mod worker;

pub use config::{EvictionCheck, RedisConfig};
pub use error::{NodeError, StoreError};
pub use node::{serve, RedisNode};
