//! Presence across nodes: each node writes its connected clients as one key with a TTL and
//! lists itself in the set of nodes; readers read every listed node's key (and drop nodes
//! whose key expired). No `SCAN`: it works the same on Redis Cluster, where keys spread over
//! the masters. The refresh also renews the TTLs of the sessions this node holds, and asks the
//! writer to verify any that the store no longer has.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, Either};
use redis::{RedisError, Value};
use tether_core::server::{PresenceInfo, SessionId};

use crate::node::Inner;
use crate::wire::millis;
use crate::worker::Write;
use crate::StoreError;

impl Inner {
    /// Writes this node's presence and renews its held sessions' TTLs.
    async fn refresh_presence(&self) -> Result<(), RedisError> {
        let Ok((presence, held)) = self
            .server
            .apply(|m, _| (m.presence(), m.held_sessions()))
            .await
        else {
            return Ok(()); // stopping
        };
        let clients: Vec<PresenceInfo> = presence
            .into_iter()
            .map(|p| PresenceInfo {
                // Connection labels are per node: prefixed, they stay unique across nodes.
                client_id: format!("{}:{}", self.keys.node(), p.client_id),
                ..p
            })
            .collect();
        let text = serde_json::to_string(&clients).unwrap_or_else(|_| "[]".into());
        let mut groups = vec![
            vec![{
                let mut c = redis::cmd("SET");
                c.arg(self.keys.presence())
                    .arg(text)
                    .arg("PX")
                    .arg(millis(self.limits.presence_ttl));
                c
            }],
            vec![{
                let mut c = redis::cmd("SADD");
                c.arg(self.keys.nodes()).arg(self.keys.node());
                c
            }],
        ];
        for (session, _) in &held {
            groups.push(
                [self.keys.meta(session), self.keys.log(session)]
                    .into_iter()
                    .map(|key| {
                        let mut c = redis::cmd("PEXPIRE");
                        c.arg(key).arg(millis(self.limits.session_ttl));
                        c
                    })
                    .collect(),
            );
        }
        let results = self.link.exec(&groups).await;
        for (k, result) in results.into_iter().enumerate() {
            let replies = result?;
            let renewed_meta = replies.into_iter().next().map(Value::extract_error);
            match renewed_meta {
                Some(Err(e)) => return Err(e),
                // A held session without metadata: gone, unless its metadata write is still
                // queued. The writer checks after that write.
                Some(Ok(Value::Int(0))) if k >= 2 => {
                    let session: &SessionId = &held[k - 2].0;
                    let _ = self.writes.unbounded_send(Write::Verify(session.clone()));
                }
                _ => {}
            }
        }
        self.answered();
        Ok(())
    }

    async fn clear_presence(&self) {
        let groups = [
            vec![{
                let mut c = redis::cmd("DEL");
                c.arg(self.keys.presence());
                c
            }],
            vec![{
                let mut c = redis::cmd("SREM");
                c.arg(self.keys.nodes()).arg(self.keys.node());
                c
            }],
        ];
        // At shutdown the store may already be gone: the key expires by itself then.
        let _ = self.link.exec(&groups).await;
    }

    /// Clients connected to any node (of `agent`, or all).
    pub(crate) async fn presence(
        &self,
        agent: Option<&str>,
    ) -> Result<Vec<PresenceInfo>, StoreError> {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut self.link.clone())
            .await?;
        let groups: Vec<Vec<redis::Cmd>> = nodes
            .iter()
            .map(|n| {
                let mut c = redis::cmd("GET");
                c.arg(self.keys.presence_of(n));
                vec![c]
            })
            .collect();
        let mut all = Vec::new();
        let mut gone = Vec::new();
        for (node, result) in nodes.iter().zip(self.link.exec(&groups).await) {
            match result?.into_iter().next().map(Value::extract_error) {
                Some(Ok(Value::Nil)) | None => gone.push(node.clone()),
                Some(Ok(v)) => {
                    let text: String = redis::from_owned_redis_value(v)?;
                    if let Ok(clients) = serde_json::from_str::<Vec<PresenceInfo>>(&text) {
                        all.extend(clients);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
        if !gone.is_empty() {
            // Nodes that stopped refreshing (killed): forget them.
            let _ = redis::cmd("SREM")
                .arg(self.keys.nodes())
                .arg(gone)
                .exec_async(&mut self.link.clone())
                .await;
        }
        all.retain(|p: &PresenceInfo| agent.is_none_or(|a| p.channels.iter().any(|c| c == a)));
        all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(all)
    }
}

/// Refreshes presence every third of its TTL and whenever it changes; clears it on shutdown.
pub(crate) async fn presence_loop(inner: Arc<Inner>) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    let period = (inner.limits.presence_ttl / 3).max(Duration::from_millis(10));
    loop {
        if let Err(e) = inner.refresh_presence().await {
            if !inner.failed(&e) {
                tracing::error!("session store: presence refresh: {e}");
            }
        }
        let due = pin!(inner.presence_due.notified());
        let refresh = future::select(inner.sleep(period), due);
        if let Either::Right(_) = future::select(refresh, &mut stopped).await {
            break;
        }
    }
    inner.stopping();
    inner.clear_presence().await;
}
