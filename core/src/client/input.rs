//! The client machine's inputs as one value, mirroring `ServerInput`: a property test, a fuzz
//! body or a simulator generates transitions from one derivable set (str0m's `handle_input`).

use std::time::Instant;

use super::Client;

/// One transport input of the client machine, for [`Client::handle_input`]. The application's
/// commands (`send`, `disconnect`, ...) stay methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    /// [`Client::handle_connected`].
    Connected,
    /// [`Client::handle_connect_failed`], with why.
    ConnectFailed(String),
    /// [`Client::handle_text`].
    Text(String),
    /// [`Client::handle_binary`].
    Binary,
    /// [`Client::handle_closed`]: the close code (`None`: no close frame) and reason.
    Closed(Option<u16>, String),
    /// [`Client::handle_timeout`].
    Timeout,
}

impl Client {
    /// Dispatches one [`ClientInput`].
    pub fn handle_input(&mut self, now: Instant, input: ClientInput) {
        match input {
            ClientInput::Connected => self.handle_connected(now),
            ClientInput::ConnectFailed(reason) => self.handle_connect_failed(now, reason),
            ClientInput::Text(text) => self.handle_text(now, &text),
            ClientInput::Binary => self.handle_binary(now),
            ClientInput::Closed(code, reason) => self.handle_closed(now, code, &reason),
            ClientInput::Timeout => self.handle_timeout(now),
        }
    }
}
