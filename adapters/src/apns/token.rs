//! The APNs provider token: an ES256 JWT signed with the team's `.p8` key, sent as
//! `authorization: bearer …` on every request.
//!
//! APNs refuses a token older than an hour (`ExpiredProviderToken`) and one renewed
//! more often than every 20 minutes (`TooManyProviderTokenUpdates`), so the token is
//! cached and renewed once it is [`RENEW_AFTER`] old — never earlier — or on demand
//! after APNs calls it invalid. Time comes in as a parameter: the cache is pure.

use std::sync::Mutex;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Age at which a cached token is replaced: well inside the hour, well past 20 min.
pub const RENEW_AFTER_SECS: i64 = 50 * 60;
/// The least age at which a forced renewal is allowed.
pub const MIN_AGE_FOR_RENEWAL_SECS: i64 = 20 * 60;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the APNs key is not a PKCS#8 P-256 private key (.p8): {0}")]
    BadKey(String),
    #[error("could not sign the APNs provider token: {0}")]
    Signing(String),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

pub struct ProviderToken {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    /// (token, issued at, in seconds since the epoch)
    cached: Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderToken")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ProviderToken {
    /// `p8` is the key file's content (PEM, PKCS#8).
    pub fn new(p8: &[u8], key_id: &str, team_id: &str) -> Result<Self, TokenError> {
        let key = EncodingKey::from_ec_pem(p8).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Ok(Self {
            key,
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            cached: Mutex::new(None),
        })
    }

    /// The token to send at `now` (seconds since the epoch).
    pub fn get(&self, now: i64) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, issued)) = cached.as_ref()
            && now - issued < RENEW_AFTER_SECS
            && now >= *issued
        {
            return Ok(token.clone());
        }
        let token = self.sign(now)?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }

    /// APNs called the token invalid or expired: renew it, unless that would renew
    /// more often than APNs allows. Returns whether a new token was made.
    pub fn renew(&self, now: i64) -> Result<bool, TokenError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, issued)) = cached.as_ref()
            && now - issued < MIN_AGE_FOR_RENEWAL_SECS
        {
            return Ok(false);
        }
        *cached = Some((self.sign(now)?, now));
        Ok(true)
    }

    fn sign(&self, now: i64) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = None;
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat: now,
            },
            &self.key,
        )
        .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const KEY: &[u8] = include_bytes!("../../tests/fixtures/apns-test-key.p8");
    const PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/apns-test-key.pub");
    const T0: i64 = 1_795_435_200;

    #[derive(serde::Deserialize, Debug)]
    struct Seen {
        iss: String,
        iat: i64,
    }

    fn verify(token: &str) -> (jsonwebtoken::Header, Seen) {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Seen>(
            token,
            &DecodingKey::from_ec_pem(PUBLIC).unwrap(),
            &validation,
        )
        .expect("a valid ES256 signature");
        (data.header, data.claims)
    }

    #[test]
    fn the_token_is_es256_with_key_id_team_and_issue_time() {
        let p = ProviderToken::new(KEY, "ABC123DEFG", "TEAM123456").unwrap();
        let (header, claims) = verify(&p.get(T0).unwrap());
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("ABC123DEFG"));
        assert_eq!(claims.iss, "TEAM123456");
        assert_eq!(claims.iat, T0);
    }

    #[test]
    fn the_token_is_cached_then_renewed_before_an_hour() {
        let p = ProviderToken::new(KEY, "K", "T").unwrap();
        let first = p.get(T0).unwrap();
        assert_eq!(p.get(T0 + 49 * 60).unwrap(), first);
        let renewed = p.get(T0 + 50 * 60).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(verify(&renewed).1.iat, T0 + 50 * 60);
    }

    #[test]
    fn forced_renewal_respects_the_twenty_minute_floor() {
        let p = ProviderToken::new(KEY, "K", "T").unwrap();
        let first = p.get(T0).unwrap();
        assert!(
            !p.renew(T0 + 60).unwrap(),
            "too soon: APNs would answer TooManyProviderTokenUpdates"
        );
        assert_eq!(p.get(T0 + 60).unwrap(), first);
        assert!(p.renew(T0 + 20 * 60).unwrap());
        assert_ne!(p.get(T0 + 20 * 60).unwrap(), first);
    }

    #[test]
    fn a_clock_going_back_does_not_keep_a_future_token() {
        let p = ProviderToken::new(KEY, "K", "T").unwrap();
        let future = p.get(T0 + 3600).unwrap();
        assert_ne!(p.get(T0).unwrap(), future);
    }

    #[test]
    fn a_bad_key_is_refused_clearly() {
        let err = ProviderToken::new(b"not a key", "K", "T").unwrap_err();
        assert!(err.to_string().contains(".p8"), "{err}");
    }
}
