//! Key and channel names, in one place.
//!
//! Every key and channel of a session carries the session id as its hash tag (`{sid}`), so
//! on Redis Cluster they all live in one slot: the append script may touch them together and
//! the session's notifications travel on that slot's shard only.

use tether_core::server::SessionId;

/// The names of everything a node reads and writes, under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    node: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            node: String::new(),
        }
    }

    pub(crate) fn with_node(mut self, node: String) -> Self {
        self.node = node;
        self
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Whether `session` can name keys (its hash tag would otherwise not be the whole id, and
    /// the keys of one session could fall in different slots). Ours are uuids; a client may
    /// send anything.
    pub(crate) fn storable(session: &SessionId) -> bool {
        !session.as_str().is_empty() && !session.as_str().contains(['{', '}'])
    }

    /// The session's notification channel (sharded pub/sub: `SSUBSCRIBE`d by the node
    /// holding the session's connection only).
    pub(crate) fn channel(&self, session: &SessionId) -> String {
        format!("{}:{{{session}}}:n", self.prefix)
    }

    /// The session a notification channel belongs to.
    pub(crate) fn session_of_channel(&self, channel: &[u8]) -> Option<SessionId> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let tagged = rest.strip_prefix(b":{")?.strip_suffix(b"}:n")?;
        std::str::from_utf8(tagged)
            .ok()
            .map(|s| SessionId(s.to_owned()))
    }

    /// The session's metadata hash (`head` is the last sequence).
    pub(crate) fn meta(&self, session: &SessionId) -> String {
        format!("{}:{{{session}}}:s", self.prefix)
    }

    /// The session's replay log (a stream, entry ids `{seq}-0`).
    pub(crate) fn log(&self, session: &SessionId) -> String {
        format!("{}:{{{session}}}:log", self.prefix)
    }

    /// The range an append run was given (its idempotency record; see the append script).
    pub(crate) fn run(&self, session: &SessionId, run: u128) -> String {
        format!("{}:{{{session}}}:run:{run:032x}", self.prefix)
    }

    /// A request id seen in a session (a node's claim until answered, then the outcome's
    /// JSON).
    pub(crate) fn request(&self, session: &SessionId, request_id: &str) -> String {
        format!("{}:{{{session}}}:req:{request_id}", self.prefix)
    }

    /// This node's connected clients (one JSON list, with a TTL).
    pub(crate) fn presence(&self) -> String {
        self.presence_of(&self.node)
    }

    /// Node `node`'s connected clients.
    pub(crate) fn presence_of(&self, node: &str) -> String {
        format!("{}:presence:{node}", self.prefix)
    }

    /// The set of nodes that have written presence (pruned by readers when a node's presence
    /// key has expired).
    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_session_shares_its_hash_tag_and_channels_map_back() {
        let keys = Keys::new("p");
        let sid = SessionId("abc".into());
        for key in [
            keys.meta(&sid),
            keys.log(&sid),
            keys.run(&sid, 7),
            keys.request(&sid, "r{1}"),
            keys.channel(&sid),
        ] {
            let tag = key.split_once('{').and_then(|(_, r)| r.split_once('}'));
            assert_eq!(tag.map(|(t, _)| t), Some("abc"), "{key}");
        }
        assert_eq!(
            keys.session_of_channel(keys.channel(&sid).as_bytes()),
            Some(sid)
        );
        assert_eq!(keys.session_of_channel(b"q:{abc}:n"), None);
        assert!(!Keys::storable(&SessionId("a}b".into())));
        assert!(!Keys::storable(&SessionId(String::new())));
    }
}
