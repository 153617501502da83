//! Key and channel names, in one place.

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

    /// Where appends are announced.
    pub(crate) fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// The session's metadata hash (`head` is the last sequence).
    pub(crate) fn meta(&self, session: &SessionId) -> String {
        format!("{}:s:{session}", self.prefix)
    }

    /// The session's replay log (a stream, entry ids `{seq}-0`).
    pub(crate) fn log(&self, session: &SessionId) -> String {
        format!("{}:log:{session}", self.prefix)
    }

    /// A request id seen in a session (`""` until answered, then the outcome's JSON).
    pub(crate) fn request(&self, session: &SessionId, request_id: &str) -> String {
        format!("{}:req:{session}:{request_id}", self.prefix)
    }

    /// One of this node's connected clients.
    pub(crate) fn presence(&self, client: &str) -> String {
        format!("{}:presence:{}:{client}", self.prefix, self.node)
    }

    /// Every node's clients (a `SCAN MATCH` pattern).
    pub(crate) fn presence_pattern(&self) -> String {
        format!("{}:presence:*", self.prefix)
    }
}
