//! API clients: the authentication backends allowed to call otpd, each known by an
//! API key sent as `Authorization: Bearer KEY`.
//!
//! Keys are long random tokens, so the configuration holds only their SHA-256: a
//! leaked configuration does not leak a key, and a slow password hash would buy
//! nothing against a 256-bit secret. Lookup is by digest, so no comparison ever runs
//! over the secret itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{ClientConfig, KeyDigest, RegistryAccess};
use crate::domain::name::Name;
use crate::numbers::reader::Region;
use crate::policy::gcra::Quota;
use crate::secrets::code::RandomSource;

/// An authenticated caller and what it may do.
#[derive(Debug)]
pub struct Client {
    pub name: Name,
    /// Its own rate (`None`: only the shared limits apply).
    pub quota: Option<Quota>,
    purposes: Option<HashSet<Box<str>>>,
    countries: Option<HashSet<Region>>,
    /// Share of each purpose's capacity kept for it.
    pub reserved: f64,
    pub admin: bool,
    /// Its requests by subject must carry the subject's contrast value.
    pub require_contrast: bool,
    /// What it may do with the subscriber registry.
    pub registry: RegistryAccess,
    /// Its requests by a registered subject may send the code to another number.
    pub override_to: bool,
    /// The API is open (no clients configured): this is everybody.
    open: bool,
}

impl Client {
    /// The name its verifications carry; `None` for everybody on an open API.
    pub fn id(&self) -> Option<Name> {
        (!self.open).then_some(self.name)
    }

    pub fn may_use(&self, purpose: &str) -> bool {
        self.purposes.as_ref().is_none_or(|p| p.contains(purpose))
    }

    /// Numbers without a country (satellite, international networks) pass only
    /// when the client is not restricted to countries.
    pub fn may_send_to(&self, country: Option<Region>) -> bool {
        match (&self.countries, country) {
            (None, _) => true,
            (Some(allowed), Some(c)) => allowed.contains(&c),
            (Some(_), None) => false,
        }
    }

    /// The countries it may send to, for error messages.
    pub fn countries(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .countries
            .iter()
            .flatten()
            .map(|c| c.to_string())
            .collect();
        list.sort();
        list
    }
}

/// Why a request is not from a known client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the Authorization header must be `Bearer <key>`")]
    Malformed,
    #[error("this API key is not known")]
    Unknown,
}

/// The configured clients.
#[derive(Debug)]
pub struct Clients {
    by_digest: HashMap<[u8; 32], Arc<Client>>,
    /// Set when no client is configured.
    open: Option<Arc<Client>>,
}

impl Clients {
    /// From validated configuration.
    pub fn new(config: &[ClientConfig]) -> Clients {
        if config.is_empty() {
            return Clients {
                by_digest: HashMap::new(),
                open: Some(Arc::new(Client {
                    name: Name::new("open"),
                    quota: None,
                    purposes: None,
                    countries: None,
                    reserved: 0.0,
                    admin: true,
                    require_contrast: false,
                    // Somebody must be able to register subscribers on an open API;
                    // sending a subject's code elsewhere stays refused.
                    registry: RegistryAccess::Write,
                    override_to: false,
                    open: true,
                })),
            };
        }
        let by_digest = config
            .iter()
            .map(|c| {
                let digest = *c.key_sha256.bytes();
                let client = Client {
                    name: Name::new(c.name.as_str()),
                    quota: crate::policy::limits::quota(c.rate),
                    purposes: (!c.purposes.is_empty())
                        .then(|| c.purposes.iter().map(|p| p.as_str().into()).collect()),
                    countries: (!c.countries.is_empty()).then(|| {
                        c.countries
                            .iter()
                            .filter_map(|c| Region::parse(c))
                            .collect()
                    }),
                    reserved: c.reserved,
                    admin: c.admin,
                    require_contrast: c.require_contrast,
                    registry: c.registry,
                    override_to: c.override_to,
                    open: false,
                };
                (digest, Arc::new(client))
            })
            .collect();
        Clients {
            by_digest,
            open: None,
        }
    }

    /// No client is configured: every request is let in.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The client an `Authorization` header value names.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Client>, AuthError> {
        if let Some(everybody) = &self.open {
            return Ok(everybody.clone());
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let key = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .map(<[u8]>::trim_ascii)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Malformed)?;
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or(AuthError::Unknown)
    }

    /// The client with this name (the open API's one client is `open`).
    pub fn by_name(&self, name: &str) -> Option<&Arc<Client>> {
        match &self.open {
            Some(everybody) => (&*everybody.name == name).then_some(everybody),
            None => self.by_digest.values().find(|c| &*c.name == name),
        }
    }

    /// Every configured client (for reserved shares).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.by_digest.values()
    }
}

/// The names people see in the app for each client that may ask for an approval,
/// kept apart from [`Clients`] because delivery workers need only this.
#[derive(Debug, Clone)]
pub struct DisplayNames {
    by_client: HashMap<Box<str>, Arc<str>>,
    /// For requests on an open API (no client).
    open: Arc<str>,
}

impl DisplayNames {
    pub fn new(clients: &[ClientConfig], open: &str) -> Self {
        Self {
            by_client: clients
                .iter()
                .map(|c| {
                    let shown = c.display_name.as_deref().unwrap_or(&c.name);
                    (Box::from(c.name.as_str()), Arc::from(shown))
                })
                .collect(),
            open: Arc::from(open),
        }
    }

    /// The name shown for `client` (a verification's client); a client no longer
    /// configured is shown by its name.
    pub fn of(&self, client: Option<&str>) -> Arc<str> {
        match client {
            None => self.open.clone(),
            Some(c) => self
                .by_client
                .get(c)
                .cloned()
                .unwrap_or_else(|| Arc::from(c)),
        }
    }
}

/// The SHA-256 of an API key: what `[[clients]] key_sha256` holds (displayed in
/// hex, as the file writes it).
pub fn hash_key(key: &str) -> KeyDigest {
    KeyDigest::of(key)
}

/// A new API key: `otpd_` and 32 random bytes in hex.
pub fn new_key(rng: &mut impl RandomSource) -> Result<String, crate::secrets::code::RandomError> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes)?;
    Ok(format!("otpd_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    fn config(name: &str, key: &str) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            key_sha256: hash_key(key),
            rate: Rate::per(10, 1),
            purposes: vec!["login".into()],
            countries: vec!["ES".into(), "PT".into()],
            reserved: 0.25,
            admin: false,
            display_name: None,
            require_contrast: false,
            registry: RegistryAccess::None,
            override_to: false,
            webhook_url: None,
            webhook_secret: None,
            keep_events: false,
        }
    }

    #[test]
    fn without_clients_everybody_is_let_in_anonymously() {
        let c = Clients::new(&[]);
        assert!(c.is_open());
        let everybody = c.authenticate(None).unwrap();
        assert_eq!(everybody.id(), None);
        assert!(everybody.may_use("anything") && everybody.admin);
    }

    #[test]
    fn keys_are_recognised_by_their_digest() {
        let c = Clients::new(&[config("sede", "k1"), config("bank", "k2")]);
        assert_eq!(&*c.authenticate(Some(b"Bearer k2")).unwrap().name, "bank");
        assert_eq!(
            c.authenticate(Some(b"Bearer  k1 "))
                .unwrap()
                .id()
                .map(|n| n.as_str()),
            Some("sede")
        );
        assert_eq!(c.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            c.authenticate(Some(b"Basic azE6")).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            c.authenticate(Some(b"Bearer ")).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            c.authenticate(Some(b"Bearer k3")).unwrap_err(),
            AuthError::Unknown
        );
    }

    #[test]
    fn permissions_follow_the_configuration() {
        let c = Clients::new(&[config("sede", "k1")]);
        let sede = c.authenticate(Some(b"Bearer k1")).unwrap();
        assert!(sede.may_use("login") && !sede.may_use("signup"));
        assert!(sede.may_send_to(Region::parse("PT")));
        assert!(!sede.may_send_to(Region::parse("FR")));
        assert!(!sede.may_send_to(None));
        assert_eq!(sede.countries(), ["ES", "PT"]);
    }

    #[test]
    fn new_keys_hash_to_what_the_config_expects() {
        let key = new_key(&mut crate::secrets::code::OsRandom).unwrap();
        assert!(key.starts_with("otpd_") && key.len() == 69);
        let c = Clients::new(&[config("sede", &key)]);
        let header = format!("Bearer {key}");
        assert!(c.authenticate(Some(header.as_bytes())).is_ok());
    }
}
