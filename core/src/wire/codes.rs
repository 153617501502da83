//! Machine-readable rejection codes and recovery steps (PROTOCOL.md §12), as open enums.

use serde::{Deserialize, Serialize};

macro_rules! open_string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        ///
        /// Values are equal when their wire spellings are: `Other("rate_limited")` is
        /// `RateLimited`.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => Self::$variant,)*
                    _ => Self::Other(s),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Other(s) => s,
                    other => other.as_str().to_owned(),
                }
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_string_enum! {
    /// Why a server refused a connection or handshake (`hello_error.code`, legacy `error.code`).
    ConnectErrorCode {
        /// Missing or wrong credentials: get a new token.
        AuthRequired = "auth_required",
        /// The session belongs to someone else, or a takeover was refused.
        AuthUnauthorized = "auth_unauthorized",
        /// No common protocol version (hello path).
        ProtocolUnsupported = "protocol_unsupported",
        /// Device pairing needed (defined by PraisonAI, never sent by its server).
        PairingRequired = "pairing_required",
        /// The requested agent does not exist.
        AgentNotFound = "agent_not_found",
        /// Too many connections or sessions: retry, honouring `retry_after_seconds`.
        RateLimited = "rate_limited",
        /// The browser origin is not allowed.
        OriginNotAllowed = "origin_not_allowed",
        /// The server is misconfigured.
        ConfigurationError = "configuration_error",
        /// No common protocol version (legacy join path).
        VersionUnsupported = "version_unsupported",
        /// Malformed version fields (legacy join path; tether's server uses it on hello too).
        InvalidProtocolHello = "invalid_protocol_hello",
        /// Legacy join: takeover refused.
        Unauthorized = "unauthorized",
        /// tether: the server is shutting down (transient: retry elsewhere or later).
        Unavailable = "unavailable",
        /// tether, store mode: the session store did not answer (transient).
        StoreUnavailable = "store_unavailable",
        /// tether, store mode: another handshake on this connection waits for the store
        /// (transient).
        HandshakeInProgress = "handshake_in_progress",
        /// tether: a frame that is not JSON, not an object, or has an ill-typed field.
        InvalidFrame = "invalid_frame",
        /// tether: a field's value is refused (an empty `content`, a `since` that is not an
        /// integer).
        InvalidValue = "invalid_value",
        /// tether: a frame over the server's `max_frame_bytes` (advertised as `policy.max_payload`).
        PayloadTooLarge = "payload_too_large",
    }
}

impl ConnectErrorCode {
    /// Whether retrying can help. The reference server's codes are terminal except
    /// `rate_limited`; tether's own codes and unknown codes are treated as transient (fail
    /// open), like the reference client treats codes it does not know.
    pub fn is_recoverable(&self) -> bool {
        !matches!(
            self,
            Self::AuthRequired
                | Self::AuthUnauthorized
                | Self::ProtocolUnsupported
                | Self::PairingRequired
                | Self::AgentNotFound
                | Self::OriginNotAllowed
                | Self::ConfigurationError
                | Self::VersionUnsupported
                | Self::InvalidProtocolHello
                | Self::Unauthorized
        )
    }
}

open_string_enum! {
    /// What the server tells a rejected client to do next (`next_step`).
    RecoveryStep {
        /// Obtain fresh credentials.
        Reauthenticate = "reauthenticate",
        /// Re-pair the device.
        Repair = "repair",
        /// The client is too old for the server.
        UpgradeClient = "upgrade_client",
        /// The client is too new for the server.
        DowngradeClient = "downgrade_client",
        /// Back off, then retry.
        WaitThenRetry = "wait_then_retry",
        /// Do not retry: fix the request.
        DoNotRetry = "do_not_retry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept_and_recoverable() {
        for text in [
            "auth_required",
            "rate_limited",
            "version_unsupported",
            "brand_new_code",
        ] {
            let code = ConnectErrorCode::from(text);
            assert_eq!(code.as_str(), text);
            assert_eq!(String::from(code.clone()), text);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(
                serde_json::from_str::<ConnectErrorCode>(&json).unwrap(),
                code
            );
        }
        assert!(ConnectErrorCode::RateLimited.is_recoverable());
        assert!(ConnectErrorCode::from("brand_new_code").is_recoverable());
        assert!(!ConnectErrorCode::AuthRequired.is_recoverable());
        assert!(!ConnectErrorCode::ProtocolUnsupported.is_recoverable());
        assert_eq!(
            RecoveryStep::from("downgrade_client"),
            RecoveryStep::DowngradeClient
        );
    }

    #[test]
    fn codes_are_equal_by_wire_spelling_and_tethers_own_codes_stay_transient() {
        assert_eq!(
            ConnectErrorCode::Other("store_unavailable".into()),
            ConnectErrorCode::StoreUnavailable
        );
        assert_ne!(
            ConnectErrorCode::InvalidFrame,
            ConnectErrorCode::InvalidValue
        );
        let hash = |c: &ConnectErrorCode| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            c.hash(&mut h);
            h.finish()
        };
        assert_eq!(
            hash(&ConnectErrorCode::Other("rate_limited".into())),
            hash(&ConnectErrorCode::RateLimited)
        );
        for code in [
            ConnectErrorCode::Unavailable,
            ConnectErrorCode::StoreUnavailable,
            ConnectErrorCode::HandshakeInProgress,
            ConnectErrorCode::InvalidFrame,
            ConnectErrorCode::InvalidValue,
            ConnectErrorCode::PayloadTooLarge,
        ] {
            assert!(code.is_recoverable(), "{code}");
            assert_eq!(ConnectErrorCode::from(code.as_str()), code);
        }
    }
}
