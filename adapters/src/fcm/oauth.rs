//! Google's OAuth2 for service accounts: a JWT signed with the account's RSA key,
//! exchanged at the account's `token_uri` for an access token (RFC 7523).
//!
//! Written here rather than taken from `gcp_auth` so that the token endpoint is
//! reached through the same client, with the same trust settings (a private CA, the
//! push mock), as the send endpoint.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::push::bearer::{FetchError, TokenResponse, fetch_token};
use crate::push::now_secs;

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a service-account key file otpd uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: Zeroizing<String>,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
    #[serde(default)]
    pub project_id: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    #[error(
        "the service-account file is not valid JSON with client_email, private_key and token_uri: {0}"
    )]
    Json(String),
    #[error("the service account's private_key is not an RSA key in PEM: {0}")]
    Key(String),
}

impl ServiceAccount {
    pub fn from_json(json: &[u8]) -> Result<Self, AccountError> {
        serde_json::from_slice(json).map_err(|e| AccountError::Json(e.to_string()))
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// Signs grant assertions for one service account.
pub struct Assertions {
    key: EncodingKey,
    header: Header,
    account: ServiceAccount,
}

impl Assertions {
    pub fn new(account: ServiceAccount) -> Result<Self, AccountError> {
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| AccountError::Key(e.to_string()))?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = account.private_key_id.clone();
        let this = Self {
            key,
            header,
            account,
        };
        // A key that parses but cannot sign fails now, not at the first push.
        this.sign(now_secs()).map_err(AccountError::Key)?;
        Ok(this)
    }

    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// The signed JWT for a grant at `now` (valid one hour, the most Google allows).
    pub fn sign(&self, now: i64) -> Result<String, String> {
        let claims = Claims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now,
            exp: now + 3600,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| e.to_string())
    }

    /// Exchange a fresh assertion for an access token.
    pub async fn fetch(&self, client: &reqwest::Client) -> Result<TokenResponse, FetchError> {
        let assertion = self.sign(now_secs()).map_err(|reason| FetchError {
            reason,
            permanent: true,
        })?;
        fetch_token(
            client,
            &self.account.token_uri,
            &[("grant_type", GRANT_TYPE), ("assertion", &assertion)],
        )
        .await
    }
}
