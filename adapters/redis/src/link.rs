//! The node's link to Redis: one multiplexed RESP3 connection to a single Redis (redis-rs'
//! `ConnectionManager`) or a cluster connection to Redis Cluster, both with connection and
//! response timeouts and a reconnect backoff capped at [`RedisConfig::reconnect_max`]. Pushes
//! (the notifications of the sessions this node subscribed to, and the library's
//! `Disconnection` notice) arrive on one channel.

use futures::channel::mpsc;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisError, RedisFuture,
};

use crate::RedisConfig;

/// Attempts of one reconnect round inside the client library before the pending commands
/// fail (the store worker retries them after its own capped delay).
const RECONNECT_ATTEMPTS: usize = 2;

/// A connection to a single Redis or to a cluster. Cheap to clone (one shared connection).
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where the link's pushes go.
pub(crate) type Pushes = mpsc::UnboundedReceiver<PushInfo>;

impl Link {
    /// Connects (failing if Redis cannot be reached within the connection timeout).
    pub(crate) async fn open(config: &RedisConfig) -> Result<(Link, Pushes), RedisError> {
        let (tx, pushes) = mpsc::unbounded();
        let sender =
            move |info: PushInfo| tx.unbounded_send(info).map_err(|_| redis::aio::SendError);
        let link = if config.cluster_nodes.is_empty() {
            let mut info = config.url.as_str().into_connection_info()?;
            info.redis.protocol = ProtocolVersion::RESP3;
            let client = redis::Client::open(info)?;
            // redis-rs grows each delay from 1 s by `factor`; the cap (halved: its jitter adds
            // up to 100%) is what makes reconnects fit a gateway.
            let half_cap = u64::try_from(config.reconnect_max.as_millis() / 2)
                .unwrap_or(u64::MAX)
                .max(1);
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.response_timeout)
                .set_factor(2)
                .set_max_delay(half_cap)
                .set_number_of_retries(RECONNECT_ATTEMPTS)
                .set_push_sender(sender);
            Link::Single(client.get_connection_manager_with_config(manager).await?)
        } else {
            let cap = u64::try_from(config.reconnect_max.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let client = redis::cluster::ClusterClientBuilder::new(config.cluster_nodes.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(cap)
                .push_sender(sender)
                .build()?;
            Link::Cluster(client.get_async_connection().await?)
        };
        Ok((link, pushes))
    }

    /// Sends `groups` of commands, each group's in order (a group's keys share one slot);
    /// there is no order between groups. One pipeline on a single Redis, one per group
    /// (concurrently) on a cluster. Each group's replies, one per command (server errors
    /// stay in place as `Value::ServerError`), or the failure of its connection.
    pub(crate) async fn exec(
        &self,
        groups: &[Vec<Cmd>],
    ) -> Vec<Result<Vec<redis::Value>, RedisError>> {
        match self {
            Link::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in groups.iter().flatten() {
                    pipe.add_command(cmd.clone());
                }
                let total = groups.iter().map(Vec::len).sum();
                match c.clone().req_packed_commands(&pipe, 0, total).await {
                    Ok(values) => {
                        let mut values = values.into_iter();
                        groups
                            .iter()
                            .map(|g| Ok(values.by_ref().take(g.len()).collect()))
                            .collect()
                    }
                    Err(e) => groups.iter().map(|_| Err(copy(&e))).collect(),
                }
            }
            Link::Cluster(c) => {
                futures::future::join_all(groups.iter().map(|g| {
                    let mut c = c.clone();
                    async move {
                        let mut pipe = redis::pipe();
                        for cmd in g {
                            pipe.add_command(cmd.clone());
                        }
                        c.req_packed_commands(&pipe, 0, g.len()).await
                    }
                }))
                .await
            }
        }
    }
}

/// The same error again (redis-rs errors are not `Clone`), for every command it failed.
pub(crate) fn copy(e: &RedisError) -> RedisError {
    if e.is_io_error() {
        let kind = if e.is_timeout() {
            std::io::ErrorKind::TimedOut
        } else {
            std::io::ErrorKind::ConnectionReset
        };
        return std::io::Error::new(kind, e.to_string()).into();
    }
    RedisError::from((e.kind(), "failed", e.to_string()))
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether a failed command may succeed if sent again: the connection dropped or timed out,
/// Redis is loading its data, the cluster is resharding or failing over, or Redis is out of
/// memory under `noeviction` (it may free some as sessions expire).
pub(crate) fn transient(e: &RedisError) -> bool {
    use redis::{ErrorKind, RetryMethod};
    matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::NoScriptError)
        || e.code() == Some("OOM")
        || e.is_timeout()
        || !matches!(e.retry_method(), RetryMethod::NoRetry)
}
