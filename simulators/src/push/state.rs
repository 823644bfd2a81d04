//! What the push mock remembers: credentials it issued or verified, devices that are
//! gone, the error mix it answers with, and the requests it was sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Apns,
    Fcm,
    Hms,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Apns, Provider::Fcm, Provider::Hms];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
            Provider::Hms => "hms",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How the mock answers pushes that pass validation: after `latency_ms`, a share
/// `throttle` of them with the provider's rate-limit answer (429 / 503 with
/// `Retry-After: retry_after_secs`) and a share `server_error` with a 5xx. Shares are
/// applied exactly (every 1/share-th request), not randomly, so runs repeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    pub latency_ms: u64,
    pub throttle: f64,
    pub server_error: f64,
    pub retry_after_secs: Option<u64>,
}

/// What a validated push is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Throttle { retry_after: Option<u64> },
    ServerError,
}

/// A request as the mock saw it (inspection endpoint).
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub seq: u64,
    pub provider: Provider,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as JSON, or as text when it is not JSON.
    pub body: serde_json::Value,
    pub status: u16,
    /// The error reason or code answered, if not a success.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub accepted: u64,
    pub rejected: u64,
    pub tokens_issued: u64,
}

/// Bounds on the credential caches, so a long load test cannot grow them forever.
const MAX_CACHED: usize = 100_000;

#[derive(Debug)]
pub struct State {
    behaviour: Behaviour,
    requests: [u64; 3],
    /// Requests not throttled, which the server-error share applies to.
    unthrottled: [u64; 3],
    counts: [Counts; 3],
    gone: HashSet<(Provider, String)>,
    /// Access tokens issued (FCM, HMS) and when they stop being valid.
    access: HashMap<String, (Provider, Instant)>,
    /// APNs provider tokens whose signature was verified, with their `iat`.
    verified_jwts: HashMap<String, i64>,
    /// Provider tokens declared expired by the inspection endpoint.
    revoked_jwts: HashSet<String>,
    recorded: VecDeque<Recorded>,
    keep: usize,
    seq: u64,
}

impl State {
    pub fn new(behaviour: Behaviour, keep: usize) -> Self {
        Self {
            behaviour,
            requests: [0; 3],
            unthrottled: [0; 3],
            counts: [Counts::default(); 3],
            gone: HashSet::new(),
            access: HashMap::new(),
            verified_jwts: HashMap::new(),
            revoked_jwts: HashSet::new(),
            recorded: VecDeque::new(),
            keep,
            seq: 0,
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    pub fn set_behaviour(&mut self, b: Behaviour) {
        self.behaviour = b;
    }

    /// The answer for the next validated push to `provider`.
    pub fn verdict(&mut self, provider: Provider) -> Verdict {
        let n = &mut self.requests[provider.index()];
        *n += 1;
        let hits = |share: f64, n: u64| -> bool {
            share > 0.0 && ((n as f64) * share).floor() > (((n - 1) as f64) * share).floor()
        };
        let b = self.behaviour;
        if hits(b.throttle, *n) {
            return Verdict::Throttle {
                retry_after: b.retry_after_secs,
            };
        }
        let m = &mut self.unthrottled[provider.index()];
        *m += 1;
        if hits(b.server_error, *m) {
            Verdict::ServerError
        } else {
            Verdict::Accept
        }
    }

    pub fn unregister(&mut self, provider: Provider, token: &str) {
        self.gone.insert((provider, token.to_string()));
    }

    pub fn is_gone(&self, provider: Provider, token: &str) -> bool {
        self.gone.contains(&(provider, token.to_string()))
    }

    pub fn issue_access_token(&mut self, provider: Provider, ttl: Duration) -> String {
        if self.access.len() >= MAX_CACHED {
            let now = Instant::now();
            self.access.retain(|_, (_, until)| *until > now);
        }
        self.seq += 1;
        // Unguessable enough for a test double: the time and a sequence number.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!(
            "mock.{}.{:032x}",
            provider.as_str(),
            nanos ^ ((self.seq as u128) << 64)
        );
        self.access
            .insert(token.clone(), (provider, Instant::now() + ttl));
        self.counts[provider.index()].tokens_issued += 1;
        token
    }

    /// Whether `token` is a live access token for `provider`.
    pub fn access_ok(&self, provider: Provider, token: &str) -> AccessCheck {
        match self.access.get(token) {
            None => AccessCheck::Unknown,
            Some((p, _)) if *p != provider => AccessCheck::Unknown,
            Some((_, until)) if *until <= Instant::now() => AccessCheck::Expired,
            Some(_) => AccessCheck::Valid,
        }
    }

    pub fn jwt_verified(&self, jwt: &str) -> Option<i64> {
        self.verified_jwts.get(jwt).copied()
    }

    pub fn remember_jwt(&mut self, jwt: &str, iat: i64) {
        if self.verified_jwts.len() >= MAX_CACHED {
            self.verified_jwts.clear();
        }
        self.verified_jwts.insert(jwt.to_string(), iat);
    }

    pub fn jwt_revoked(&self, jwt: &str) -> bool {
        self.revoked_jwts.contains(jwt)
    }

    /// Every credential handed out or seen so far stops working: access tokens are
    /// answered as expired, provider tokens as `ExpiredProviderToken`.
    pub fn expire_credentials(&mut self) {
        let now = Instant::now();
        for (_, until) in self.access.values_mut() {
            *until = now;
        }
        self.revoked_jwts
            .extend(self.verified_jwts.drain().map(|(jwt, _)| jwt));
    }

    /// Count an answered request and keep it, made by `make` only when requests
    /// are kept at all: a load test keeps none and pays nothing for them.
    pub fn record(&mut self, provider: Provider, accepted: bool, make: impl FnOnce() -> Recorded) {
        let counts = &mut self.counts[provider.index()];
        if accepted {
            counts.accepted += 1;
        } else {
            counts.rejected += 1;
        }
        if self.keep == 0 {
            return;
        }
        let mut r = make();
        self.seq += 1;
        r.seq = self.seq;
        if self.recorded.len() >= self.keep {
            self.recorded.pop_front();
        }
        self.recorded.push_back(r);
    }

    pub fn recorded(&self, provider: Option<Provider>) -> Vec<Recorded> {
        self.recorded
            .iter()
            .filter(|r| provider.is_none_or(|p| r.provider == p))
            .cloned()
            .collect()
    }

    pub fn clear_recorded(&mut self) {
        self.recorded.clear();
    }

    pub fn counts(&self, provider: Provider) -> Counts {
        self.counts[provider.index()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessCheck {
    Valid,
    Expired,
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_exact_and_deterministic() {
        let mut s = State::new(
            Behaviour {
                throttle: 0.25,
                server_error: 0.1,
                ..Behaviour::default()
            },
            0,
        );
        let verdicts: Vec<Verdict> = (0..100).map(|_| s.verdict(Provider::Apns)).collect();
        let throttled = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Throttle { .. }))
            .count();
        let errors = verdicts
            .iter()
            .filter(|v| **v == Verdict::ServerError)
            .count();
        assert_eq!(throttled, 25);
        // Server errors are drawn from the requests not throttled.
        assert!((7..=10).contains(&errors), "{errors}");
        // Each provider has its own count.
        assert_eq!(s.verdict(Provider::Fcm), Verdict::Accept);
    }

    #[test]
    fn credentials_expire_on_demand() {
        let mut s = State::new(Behaviour::default(), 10);
        let t = s.issue_access_token(Provider::Fcm, Duration::from_secs(60));
        assert_eq!(s.access_ok(Provider::Fcm, &t), AccessCheck::Valid);
        assert_eq!(s.access_ok(Provider::Hms, &t), AccessCheck::Unknown);
        s.remember_jwt("jwt", 1);
        s.expire_credentials();
        assert_eq!(s.access_ok(Provider::Fcm, &t), AccessCheck::Expired);
        assert!(s.jwt_revoked("jwt"));
        assert_eq!(s.jwt_verified("jwt"), None);
    }

    #[test]
    fn recording_is_bounded() {
        let mut s = State::new(Behaviour::default(), 2);
        for i in 0..5 {
            s.record(Provider::Hms, true, || Recorded {
                seq: 0,
                provider: Provider::Hms,
                path: format!("/{i}"),
                headers: vec![],
                body: serde_json::Value::Null,
                status: 200,
                reason: None,
            });
        }
        let kept = s.recorded(Some(Provider::Hms));
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].path, "/4");
        assert_eq!(s.counts(Provider::Hms).accepted, 5);
    }
}
