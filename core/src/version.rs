//! Protocol version ranges and negotiation, the same rule on both sides: the highest version both
//! ranges contain, or a typed rejection that says which side must move.
//!
//! v1 is the PraisonAI gateway protocol; v2 is tether's superset (see `PROTOCOL-v2.md`).
//!
//! ```
//! use tether_core::version::{negotiate, VersionRange, Mismatch};
//! let client = VersionRange::new(1, 2).unwrap();
//! assert_eq!(negotiate(client, VersionRange::V1_ONLY), Ok(1));   // the Python server
//! assert_eq!(negotiate(client, VersionRange::TETHER), Ok(2));    // tether's server
//! assert_eq!(
//!     negotiate(VersionRange::new(3, 4).unwrap(), VersionRange::TETHER),
//!     Err(Mismatch::ClientTooNew { client_min: 3, server_max: 2 }),
//! );
//! ```

use serde::{Deserialize, Serialize};

use crate::wire::RecoveryStep;

/// The PraisonAI gateway protocol.
pub const V1: u32 = 1;
/// tether's superset of v1.
pub const V2: u32 = 2;

/// An inclusive, non-empty range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct VersionRange {
    min: u32,
    max: u32,
}

#[derive(Serialize, Deserialize)]
struct RawRange {
    min: u32,
    max: u32,
}

impl TryFrom<RawRange> for VersionRange {
    type Error = InvalidRange;
    fn try_from(r: RawRange) -> Result<Self, InvalidRange> {
        Self::new(r.min, r.max)
    }
}

impl From<VersionRange> for RawRange {
    fn from(r: VersionRange) -> Self {
        Self {
            min: r.min,
            max: r.max,
        }
    }
}

/// A range with `min > max` or a zero bound (versions start at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid version range {min}..={max}: versions start at 1 and min must not exceed max")]
pub struct InvalidRange {
    /// The offered lower bound.
    pub min: u32,
    /// The offered upper bound.
    pub max: u32,
}

impl VersionRange {
    /// Only v1: what the PraisonAI gateway speaks.
    pub const V1_ONLY: Self = Self { min: V1, max: V1 };
    /// What tether speaks: v1 and v2.
    pub const TETHER: Self = Self { min: V1, max: V2 };

    /// A range `min..=max`; refuses `min > max` and zero.
    pub fn new(min: u32, max: u32) -> Result<Self, InvalidRange> {
        if min == 0 || min > max {
            return Err(InvalidRange { min, max });
        }
        Ok(Self { min, max })
    }

    /// Lowest version.
    pub fn min(&self) -> u32 {
        self.min
    }

    /// Highest version.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: u32) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

impl Default for VersionRange {
    fn default() -> Self {
        Self::TETHER
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Disjoint ranges: which side is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Every client version is below the server's minimum: upgrade the client.
    #[error("protocol version {client_max} is too old, minimum required is {server_min}")]
    ClientTooOld {
        /// The client's highest version.
        client_max: u32,
        /// The server's lowest version.
        server_min: u32,
    },
    /// Every client version is above the server's maximum: use an older client.
    #[error("protocol version {client_min} is too new, server supports up to {server_max}")]
    ClientTooNew {
        /// The client's lowest version.
        client_min: u32,
        /// The server's highest version.
        server_max: u32,
    },
}

impl Mismatch {
    /// The recovery step the server sends with the rejection.
    pub fn next_step(&self) -> RecoveryStep {
        match self {
            Self::ClientTooOld { .. } => RecoveryStep::UpgradeClient,
            Self::ClientTooNew { .. } => RecoveryStep::DowngradeClient,
        }
    }
}

/// The highest version in both ranges.
pub fn negotiate(client: VersionRange, server: VersionRange) -> Result<u32, Mismatch> {
    if client.max < server.min {
        return Err(Mismatch::ClientTooOld {
            client_max: client.max,
            server_min: server.min,
        });
    }
    if client.min > server.max {
        return Err(Mismatch::ClientTooNew {
            client_min: client.min,
            server_max: server.max,
        });
    }
    Ok(client.max.min(server.max))
}

/// Why a peer's offer in a handshake cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The offer is not a range (`min > max`): the peer must fix its handshake.
    #[error(transparent)]
    Invalid(#[from] InvalidRange),
    /// The offer and the server's range are disjoint: the side behind must move.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

/// [`negotiate`] for an offer as a peer sent it (unchecked integers): `min > max` is invalid;
/// a minimum of 0 counts as 1, as on the reference server, so an offer of nothing but 0 is
/// too old.
pub fn negotiate_offer(min: u32, max: u32, server: VersionRange) -> Result<u32, OfferError> {
    if min > max {
        return Err(InvalidRange { min, max }.into());
    }
    match VersionRange::new(min.max(1), max) {
        Ok(offer) => Ok(negotiate(offer, server)?),
        Err(_) => Err(Mismatch::ClientTooOld {
            client_max: max,
            server_min: server.min,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_refuse_zero_and_inverted_bounds() {
        assert!(VersionRange::new(0, 1).is_err());
        assert_eq!(
            VersionRange::new(3, 1),
            Err(InvalidRange { min: 3, max: 1 })
        );
        assert!(serde_json::from_str::<VersionRange>(r#"{"min":2,"max":1}"#).is_err());
        let r: VersionRange = serde_json::from_str(r#"{"min":1,"max":2}"#).unwrap();
        assert_eq!(r, VersionRange::TETHER);
    }

    #[test]
    fn mismatch_messages_match_the_reference_server_wording() {
        let old = negotiate(
            VersionRange::new(1, 1).unwrap(),
            VersionRange::new(2, 2).unwrap(),
        );
        assert_eq!(
            old.unwrap_err().to_string(),
            "protocol version 1 is too old, minimum required is 2"
        );
        let new = negotiate(VersionRange::new(2, 3).unwrap(), VersionRange::V1_ONLY).unwrap_err();
        assert_eq!(new.next_step(), RecoveryStep::DowngradeClient);
    }

    #[test]
    fn an_offer_as_sent_is_checked_then_negotiated() {
        let tether = VersionRange::TETHER;
        assert_eq!(negotiate_offer(1, 2, tether), Ok(2));
        assert_eq!(
            negotiate_offer(0, 1, tether),
            Ok(1),
            "a minimum of 0 counts as 1"
        );
        assert_eq!(
            negotiate_offer(0, 0, tether),
            Err(OfferError::Mismatch(Mismatch::ClientTooOld {
                client_max: 0,
                server_min: 1
            }))
        );
        assert_eq!(
            negotiate_offer(3, 1, tether),
            Err(OfferError::Invalid(InvalidRange { min: 3, max: 1 }))
        );
        assert_eq!(
            negotiate_offer(3, 4, tether),
            Err(OfferError::Mismatch(Mismatch::ClientTooNew {
                client_min: 3,
                server_max: 2
            }))
        );
    }

    fn range() -> impl Strategy<Value = VersionRange> {
        (1u32..12, 0u32..6).prop_map(|(min, span)| VersionRange::new(min, min + span).unwrap())
    }

    proptest! {
        #[test]
        fn negotiation_picks_the_highest_common_version_or_a_typed_rejection(
            client in range(), server in range()
        ) {
            let common: Vec<u32> = (client.min()..=client.max()).filter(|v| server.contains(*v)).collect();
            match negotiate(client, server) {
                Ok(v) => prop_assert_eq!(Some(&v), common.iter().max()),
                Err(Mismatch::ClientTooOld { client_max, server_min }) => {
                    prop_assert!(common.is_empty());
                    prop_assert!(client_max < server_min);
                    prop_assert_eq!((client_max, server_min), (client.max(), server.min()));
                }
                Err(Mismatch::ClientTooNew { client_min, server_max }) => {
                    prop_assert!(common.is_empty());
                    prop_assert!(client_min > server_max);
                    prop_assert_eq!((client_min, server_max), (client.min(), server.max()));
                }
            }
        }

        #[test]
        fn negotiation_is_the_same_seen_from_either_side_when_it_succeeds(
            a in range(), b in range()
        ) {
            prop_assert_eq!(negotiate(a, b).ok(), negotiate(b, a).ok());
        }
    }
}
