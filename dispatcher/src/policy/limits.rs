//! Which limits a request is checked against, and under which keys: the layered
//! limits of `[limits]` and each client's quota and reserved share, turned into the
//! [`Check`]s one [`Limiter`](crate::policy::limiter::Limiter) call decides together. Pure:
//! no state, no clock.
//!
//! Keys are small fixed byte arrays built on the stack ([`IssueKeys`]), so building
//! a request's checks allocates nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arrayvec::ArrayVec;

use crate::config::LimitsConfig;
use crate::config::Rate;
use crate::config::limits::parse_prefix;
use crate::domain::name::Name;
use crate::numbers::e164::E164;
use crate::numbers::prefix_map::PrefixMap;
use crate::numbers::reader::Region;
use crate::policy::clients::{Client, Clients};
use crate::policy::gcra::Quota;
use crate::policy::limiter::{Check, MAX_CHECKS};
use crate::policy::pumping::PumpingRules;

/// The checks of one request.
pub type Checks<'a> = ArrayVec<Check<'a>, MAX_CHECKS>;

/// Limit names: the machine-readable reasons of refusals.
pub mod name {
    pub const DESTINATION: &str = "destination";
    pub const SUBJECT: &str = "subject";
    pub const IP: &str = "ip";
    pub const IP_PREFIX: &str = "ip_prefix";
    pub const CLIENT: &str = "client";
    pub const COUNTRY: &str = "country";
    pub const PREFIX: &str = "prefix";
    pub const PURPOSE: &str = "purpose";
    /// A client's reserved share of a purpose; reported as `purpose` when the shared
    /// pool is out too.
    pub const RESERVED: &str = "reserved";
    pub const PUMPING: &str = "pumping";
    pub const CHECK_IP: &str = "check_ip";
    pub const CHECK_SUBJECT: &str = "check_subject";
    /// Calls to the routes anyone may call, per caller network.
    pub const PUBLIC_IP: &str = "public_ip";
    /// Refused answers and acknowledgements, per caller network.
    pub const ANSWER_IP: &str = "answer_ip";
}

/// A purpose's capacity, divided: each reserving client's share, and the rest that
/// everybody shares.
#[derive(Debug, Clone)]
struct Capacity {
    whole: Quota,
    shared: Option<Quota>,
    reserved: HashMap<Name, Quota>,
}

/// Which part of a purpose's capacity a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Reserved,
    Shared,
}

/// What is known of a request to send a code.
#[derive(Debug, Clone, Copy)]
pub struct IssueFacts<'a> {
    pub to: E164,
    pub country: Option<Region>,
    pub subject: Option<&'a str>,
    /// The end user's address, as the backend saw it.
    pub ip: Option<IpAddr>,
    pub client: &'a Client,
    pub purpose: &'a str,
}

/// The key bytes of one request's limits.
pub struct IssueKeys {
    destination: [u8; 8],
    ip: [u8; 16],
    network: [u8; 17],
    country: [u8; 2],
    prefix: [u8; 9],
    /// purpose, a 0 byte, client name (both bounded by validation).
    share: ArrayVec<u8, 128>,
}

/// An IP address as a limit key (IPv4 as its IPv6-mapped form).
pub fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The network of `ip`: its first `bits` bits (of the IPv4 address for IPv4), and
/// the length, so that networks of different lengths never share a key.
fn network(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> [u8; 17] {
    let (mut bytes, bits) = match ip {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 96 + v4_bits),
        IpAddr::V6(v6) => (v6.octets(), v6_bits),
    };
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = (i * 8) as u8;
        if start >= bits {
            *b = 0;
        } else if bits - start < 8 {
            *b &= 0xFFu8 << (8 - (bits - start));
        }
    }
    let mut key = [0u8; 17];
    key[..16].copy_from_slice(&bytes);
    key[16] = bits;
    key
}

/// The limits in force, from configuration.
#[derive(Debug, Clone)]
pub struct LimitPolicy {
    destination: Option<Quota>,
    subject: Option<Quota>,
    ip: Option<Quota>,
    ip_prefix: Option<Quota>,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    country: Option<Quota>,
    countries: HashMap<Region, Option<Quota>>,
    prefixes: PrefixMap<Quota>,
    purposes: HashMap<Box<str>, Capacity>,
    check_ip: Option<Quota>,
    check_subject: Option<Quota>,
    public_ip: Option<Quota>,
    answer_ip: Option<Quota>,
    pub dedupe_window: Duration,
    pub reclaim_interval: Duration,
    pub pumping: PumpingRules,
    pumping_throttle: Option<Quota>,
}

/// `quota` scaled to `share` of its rate (and of its burst, at least 1).
fn share_of(quota: Quota, share: f64) -> Option<Quota> {
    if share <= 0.0 {
        return None;
    }
    let emission = quota.emission().as_secs_f64() / share;
    let burst = ((f64::from(quota.burst()) * share).floor() as u32).max(1);
    Quota::new(1, Duration::from_secs_f64(emission.max(1e-9)), burst).ok()
}

impl LimitPolicy {
    /// From validated configuration.
    pub fn new(c: &LimitsConfig, clients: &Clients) -> LimitPolicy {
        let reserving: Vec<&Arc<Client>> = clients.all().filter(|cl| cl.reserved > 0.0).collect();
        let taken: f64 = reserving.iter().map(|cl| cl.reserved).sum();
        let purposes = c
            .purposes
            .iter()
            .filter_map(|(name, rate)| {
                let whole = quota(*rate)?;
                let reserved = reserving
                    .iter()
                    .filter_map(|cl| Some((cl.name, share_of(whole, cl.reserved)?)))
                    .collect();
                let shared = share_of(whole, 1.0 - taken);
                Some((
                    Box::from(name.as_str()),
                    Capacity {
                        whole,
                        shared,
                        reserved,
                    },
                ))
            })
            .collect();
        LimitPolicy {
            destination: quota(c.destination),
            subject: quota(c.subject),
            ip: quota(c.ip),
            ip_prefix: quota(c.ip_prefix),
            ipv4_prefix: c.ipv4_prefix,
            ipv6_prefix: c.ipv6_prefix,
            country: quota(c.country),
            countries: c
                .countries
                .iter()
                .filter_map(|(k, r)| Some((Region::parse(k)?, quota(*r))))
                .collect(),
            prefixes: PrefixMap::new(
                c.prefixes
                    .iter()
                    .filter_map(|(p, r)| Some((parse_prefix(p)?, quota(*r)?))),
            ),
            purposes,
            check_ip: quota(c.check_ip),
            check_subject: quota(c.check_subject),
            public_ip: quota(c.public_ip),
            answer_ip: quota(c.answer_ip),
            dedupe_window: c.dedupe_window,
            reclaim_interval: c.reclaim_interval,
            pumping: PumpingRules::new(&c.pumping),
            pumping_throttle: quota(c.pumping.throttle),
        }
    }

    /// The key bytes of a request.
    pub fn keys(&self, f: &IssueFacts<'_>) -> IssueKeys {
        let mut share = ArrayVec::new();
        for b in f.purpose.bytes().chain([0]).chain(f.client.name.bytes()) {
            if share.try_push(b).is_err() {
                break;
            }
        }
        let prefix = match self.prefixes.lookup(f.to) {
            Some(((digits, len), _)) => {
                let mut k = [0u8; 9];
                k[..8].copy_from_slice(&digits.to_be_bytes());
                k[8] = len;
                k
            }
            None => [0; 9],
        };
        IssueKeys {
            destination: f.to.digits().to_be_bytes(),
            ip: f.ip.map(ip_key).unwrap_or_default(),
            network: f
                .ip
                .map(|ip| network(ip, self.ipv4_prefix, self.ipv6_prefix))
                .unwrap_or([0; 17]),
            country: f.country.map_or([0; 2], |c| {
                let b = c.as_str().as_bytes();
                [b[0], b[1]]
            }),
            prefix,
            share,
        }
    }

    /// The checks of a request to send a code, drawing on `pool` of its purpose.
    pub fn issue_checks<'a>(
        &'a self,
        f: &IssueFacts<'a>,
        keys: &'a IssueKeys,
        pool: Pool,
    ) -> Checks<'a> {
        let mut out = Checks::new();
        let mut add = |limit: &'static str, key: &'a [u8], quota: Option<Quota>| {
            if let Some(quota) = quota {
                out.push(Check { limit, key, quota });
            }
        };
        add(name::DESTINATION, &keys.destination, self.destination);
        if let Some(subject) = f.subject {
            add(name::SUBJECT, subject.as_bytes(), self.subject);
        }
        if f.ip.is_some() {
            add(name::IP, &keys.ip, self.ip);
            add(name::IP_PREFIX, &keys.network, self.ip_prefix);
        }
        add(name::CLIENT, f.client.name.as_bytes(), f.client.quota);
        if let Some(country) = f.country {
            let quota = match self.countries.get(&country) {
                Some(q) => *q,
                None => self.country,
            };
            add(name::COUNTRY, &keys.country, quota);
        }
        if let Some((_, quota)) = self.prefixes.lookup(f.to) {
            add(name::PREFIX, &keys.prefix, Some(*quota));
        }
        if let Some(cap) = self.purposes.get(f.purpose) {
            match pool {
                Pool::Reserved => add(
                    name::RESERVED,
                    &keys.share,
                    cap.reserved.get(&*f.client.name).copied(),
                ),
                Pool::Shared => add(name::PURPOSE, f.purpose.as_bytes(), cap.shared),
            }
        }
        out
    }

    /// Whether the client has a reserved share of the purpose (to try it first).
    pub fn has_reserved(&self, purpose: &str, client: &Client) -> bool {
        self.purposes
            .get(purpose)
            .is_some_and(|c| c.reserved.contains_key(&*client.name))
    }

    /// Whether the purpose has a shared pool (else only reserved shares).
    pub fn has_shared(&self, purpose: &str) -> bool {
        self.purposes
            .get(purpose)
            .is_none_or(|c| c.shared.is_some())
    }

    /// A purpose's whole capacity, for the admin view.
    pub fn capacity(&self, purpose: &str) -> Option<Quota> {
        self.purposes.get(purpose).map(|c| c.whole)
    }

    /// The throttle a suspect prefix gets in `throttle` mode.
    pub fn pumping_check<'a>(&self, keys: &'a [u8]) -> Option<Check<'a>> {
        self.pumping_throttle.map(|quota| Check {
            limit: name::PUMPING,
            key: keys,
            quota,
        })
    }

    /// A check attempt from `ip`.
    pub fn check_ip<'a>(&self, ip: &'a [u8; 16]) -> Option<Check<'a>> {
        self.check_ip.map(|quota| Check {
            limit: name::CHECK_IP,
            key: ip,
            quota,
        })
    }

    /// The quota of wrong codes per subject, if limited.
    pub fn check_subject_quota(&self) -> Option<Quota> {
        self.check_subject
    }

    /// A call to a route anyone may call, from the network `caller` (see
    /// [`crate::policy::peer::limit_key`]).
    pub fn public_ip<'a>(&self, caller: &'a [u8; 17]) -> Option<Check<'a>> {
        self.public_ip.map(|quota| Check {
            limit: name::PUBLIC_IP,
            key: caller,
            quota,
        })
    }

    /// A refused answer or acknowledgement from the network `caller`.
    pub fn answer_ip<'a>(&self, caller: &'a [u8; 17]) -> Option<Check<'a>> {
        self.answer_ip.map(|quota| Check {
            limit: name::ANSWER_IP,
            key: caller,
            quota,
        })
    }

    /// Wrong codes for `subject`.
    pub fn check_subject<'a>(&self, subject: &'a str) -> Option<Check<'a>> {
        self.check_subject.map(|quota| Check {
            limit: name::CHECK_SUBJECT,
            key: subject.as_bytes(),
            quota,
        })
    }
}

/// The GCRA quota of a configured rate; `None` when off. Validated rates
/// (`Config::validate`) always build one.
pub fn quota(rate: Rate) -> Option<Quota> {
    match rate {
        Rate::Off => None,
        Rate::Limit {
            count,
            period,
            burst,
        } => Quota::new(count, period, burst).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, Rate};
    use crate::policy::clients::hash_key;
    use std::collections::BTreeMap;

    fn clients() -> Clients {
        let client = |name: &str, reserved: f64| ClientConfig {
            name: name.into(),
            key_sha256: hash_key(name),
            rate: Rate::per(100, 1),
            purposes: vec![],
            countries: vec![],
            reserved,
            admin: false,
            display_name: None,
            require_contrast: false,
            registry: Default::default(),
            override_to: false,
            webhook_url: None,
            webhook_secret: None,
            keep_events: false,
        };
        Clients::new(&[client("sede", 0.25), client("bank", 0.0)])
    }

    fn policy(clients: &Clients) -> LimitPolicy {
        let config = LimitsConfig {
            country: Rate::per(1000, 60),
            countries: BTreeMap::from([("ES".into(), Rate::Off)]),
            prefixes: BTreeMap::from([("+88213".into(), Rate::per(2, 3600))]),
            purposes: BTreeMap::from([("login".into(), Rate::per(1000, 1))]),
            ..LimitsConfig::default()
        };
        LimitPolicy::new(&config, clients)
    }

    fn names(checks: &Checks<'_>) -> Vec<&'static str> {
        checks.iter().map(|c| c.limit).collect()
    }

    #[test]
    fn a_request_is_checked_against_every_limit_that_applies() {
        let clients = clients();
        let p = policy(&clients);
        let sede = clients.authenticate(Some(b"Bearer sede")).unwrap();
        let f = IssueFacts {
            to: E164::from_digits_unchecked(882_130_000_001),
            country: None,
            subject: Some("12345678Z"),
            ip: Some("192.0.2.7".parse().unwrap()),
            client: &sede,
            purpose: "login",
        };
        let keys = p.keys(&f);
        assert_eq!(
            names(&p.issue_checks(&f, &keys, Pool::Reserved)),
            [
                "destination",
                "subject",
                "ip",
                "ip_prefix",
                "client",
                "prefix",
                "reserved"
            ]
        );
        // Spain's own rate is off; a number with a country and no prefix limit.
        let f = IssueFacts {
            to: E164::from_digits_unchecked(34_600_123_456),
            country: Region::parse("ES"),
            subject: None,
            ip: None,
            ..f
        };
        let keys = p.keys(&f);
        assert_eq!(
            names(&p.issue_checks(&f, &keys, Pool::Shared)),
            ["destination", "client", "purpose"]
        );
        let f = IssueFacts {
            country: Region::parse("FR"),
            ..f
        };
        let keys = p.keys(&f);
        assert!(names(&p.issue_checks(&f, &keys, Pool::Shared)).contains(&"country"));
    }

    #[test]
    fn reserved_shares_divide_a_purposes_capacity() {
        let clients = clients();
        let p = policy(&clients);
        let sede = clients.authenticate(Some(b"Bearer sede")).unwrap();
        let bank = clients.authenticate(Some(b"Bearer bank")).unwrap();
        assert!(p.has_reserved("login", &sede));
        assert!(!p.has_reserved("login", &bank));
        let cap = &p.purposes["login"];
        assert_eq!(cap.whole.emission(), Duration::from_millis(1));
        assert_eq!(cap.reserved["sede"].emission(), Duration::from_millis(4));
        assert_eq!(cap.reserved["sede"].burst(), 250);
        let shared = cap.shared.unwrap();
        assert!((shared.emission().as_secs_f64() - 1.0 / 750.0).abs() < 1e-9);
        assert_eq!(shared.burst(), 750);
    }

    #[test]
    fn networks_keep_their_prefix_only() {
        let a = network("192.0.2.7".parse().unwrap(), 24, 64);
        let b = network("192.0.2.200".parse().unwrap(), 24, 64);
        let c = network("192.0.3.7".parse().unwrap(), 24, 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v6a = network("2001:db8:1:2:aaaa::1".parse().unwrap(), 24, 64);
        let v6b = network("2001:db8:1:2:bbbb::9".parse().unwrap(), 24, 64);
        let v6c = network("2001:db8:1:3::1".parse().unwrap(), 24, 64);
        assert_eq!(v6a, v6b);
        assert_ne!(v6a, v6c);
        // A /20 keeps 4 bits of the third byte.
        let n = network("10.1.255.1".parse().unwrap(), 20, 64);
        assert_eq!(&n[12..16], &[10, 1, 0xF0, 0]);
    }
}
