//! What goes wrong: talking to the store ([`StoreError`]) and starting a node ([`NodeError`]).

use tether_core::server::{CommandError, SessionId};
use tether_driver::{ServeError, ServerError};

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis refused the command, or could not be reached for a read. Check Redis's logs and
    /// version (≥ 7.0); reads may be retried.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis is unreachable and the append queue is full: nothing was published. Retry later
    /// (`GET /ready` answers 200 again once Redis is back), or enlarge
    /// [`RedisConfig::append_queue`](crate::RedisConfig::append_queue).
    #[error("the session store is unreachable and {queued} events already wait for it")]
    Backlogged {
        /// The queue's bound.
        queued: usize,
    },
    /// More events in one call than the append queue (or [`PUBLISH_MANY_MAX`](tether_driver::PUBLISH_MANY_MAX)) holds: split
    /// the batch.
    #[error("{events} events in one call (at most {max})")]
    BatchTooLarge {
        /// Events in the call.
        events: usize,
        /// The most one call may carry.
        max: usize,
    },
    /// Redis answered an append with something else than the script's reply (a script or a
    /// key of the same name changed by something other than tether): check the key prefix is
    /// tether's alone.
    #[error("unexpected reply from Redis: {0:?}")]
    UnexpectedReply(redis::Value),
    /// The server handle is gone.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The event could not be built (reserved kind or field).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No such session in the store (never created, expired, or lost by Redis): drop the work.
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// The server machine is not in store mode, or another node already answers its store
    /// requests.
    #[error("the server must run with ServerConfig::external_store = true, for one node")]
    NotStoreMode,
    /// Redis may evict tether's keys (its `maxmemory-policy`), and the node was told to
    /// refuse that ([`EvictionCheck::Refuse`](crate::EvictionCheck::Refuse)): set `maxmemory-policy noeviction`.
    #[error("redis maxmemory-policy is {policy}: it may evict live sessions (set noeviction)")]
    Evicting {
        /// The policy Redis reported.
        policy: String,
    },
    /// The key prefix contains `{` or `}` (it would break the keys' hash tags).
    #[error("key prefix {0:?} must not contain braces")]
    InvalidPrefix(String),
    /// The OS gave no entropy for the node id (a sandbox without `getrandom`, or a very early
    /// boot): check the host.
    #[error("no OS entropy for the node id")]
    Entropy(#[source] getrandom::Error),
    /// The node has stopped.
    #[error("the store worker has stopped")]
    Stopped,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listener or server.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}
