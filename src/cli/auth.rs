//! The tokens `tether serve` accepts: one principal per token, so that a session created with
//! one token cannot be resumed with another (`--token` given several times).

use tether_core::server::{Authenticator, ConnectInfo, Principal, Rejection, SharedToken};

/// Several shared tokens, each its own principal. The first keeps the principal of a single
/// shared token (`token`), so state files written with one token stay resumable.
pub struct Tokens(Vec<SharedToken>);

impl Tokens {
    /// The tokens, in order.
    pub fn new(tokens: &[String]) -> Self {
        Self(tokens.iter().map(|t| SharedToken::new(t.clone())).collect())
    }
}

impl Authenticator for Tokens {
    fn authenticate(&self, info: &ConnectInfo) -> Result<Principal, Rejection> {
        // Every token is compared (in constant time each), whichever matches.
        let mut found = None;
        for (i, token) in self.0.iter().enumerate() {
            if token.authenticate(info).is_ok() && found.is_none() {
                found = Some(i);
            }
        }
        match found {
            Some(0) => Ok(Principal("token".into())),
            Some(i) => Ok(Principal(format!("token-{}", i + 1))),
            None => Err(Rejection::auth_required()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(token: &str) -> ConnectInfo {
        ConnectInfo {
            query_token: Some(token.into()),
            ..ConnectInfo::default()
        }
    }

    #[test]
    fn each_token_is_its_own_principal_and_others_are_refused() {
        let tokens = Tokens::new(&["a".into(), "b".into()]);
        assert_eq!(
            tokens.authenticate(&with("a")),
            Ok(Principal("token".into()))
        );
        assert_eq!(
            tokens.authenticate(&with("b")),
            Ok(Principal("token-2".into()))
        );
        assert!(tokens.authenticate(&with("c")).is_err());
        assert!(tokens.authenticate(&ConnectInfo::default()).is_err());
    }
}
