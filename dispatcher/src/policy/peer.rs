//! Who is calling, by network address: the connection's peer, or — only when that
//! peer is one of the configured trusted proxies — the address the proxies recorded
//! in `X-Forwarded-For`. Routes that anyone may call are limited per caller network
//! ([`limit_key`]), so this is what a flood, or a stranger trying answers, is
//! charged to.
//!
//! `X-Forwarded-For` is read from the right: each trusted proxy appends the address
//! it received the request from, so the first entry from the right that is not a
//! trusted proxy is the caller. Whatever the caller wrote further left is never
//! reached. From a peer that is not trusted the header is ignored: anybody can write
//! it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Entries of `X-Forwarded-For` looked at, from the right: a chain of proxies is
/// short, and a long header must not cost a long walk.
const MAX_HOPS: usize = 16;

/// An address or a CIDR network (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an IP address or a CIDR network such as 10.0.0.0/8 or fd00::/8")]
pub struct InvalidNetwork;

impl FromStr for Network {
    type Err = InvalidNetwork;

    fn from_str(s: &str) -> Result<Self, InvalidNetwork> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| InvalidNetwork)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or(InvalidNetwork)?,
        };
        Ok(Network { addr, bits })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as a dual-stack socket reports
/// IPv4 peers) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xFFu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The proxies whose word on the caller is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// From validated configuration (entries that do not parse are skipped).
    pub fn new(entries: &[String]) -> Self {
        Self(entries.iter().filter_map(|e| e.parse().ok()).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The caller of a request that came from `peer` with these `X-Forwarded-For`
    /// values (in the order they came).
    pub fn caller<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut caller = peer;
        let hops = forwarded_for
            .rev()
            .flat_map(|value| value.rsplit(|&b| b == b','))
            .take(MAX_HOPS);
        for hop in hops {
            let Some(ip) = std::str::from_utf8(hop)
                .ok()
                .and_then(|s| parse_hop(s.trim()))
            else {
                // A proxy wrote what it must not: believe no more of the header.
                return caller;
            };
            caller = canonical(ip);
            if !self.trusts(caller) {
                return caller;
            }
        }
        caller
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:5678`,
/// `[2001:db8::1]:5678`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The caller's network as a limit key: an IPv4 address whole, an IPv6 address by
/// its /64 (one subscriber line gets a /64, and walking through it costs nothing).
pub fn limit_key(ip: IpAddr) -> [u8; 17] {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let mut key = [0u8; 17];
            key[..16].copy_from_slice(&v4.to_ipv6_mapped().octets());
            key[16] = 128;
            key
        }
        IpAddr::V6(v6) => {
            let mut key = [0u8; 17];
            key[..8].copy_from_slice(&v6.octets()[..8]);
            key[16] = 64;
            key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn caller(trusted: &[&str], peer: &str, xff: &[&str]) -> IpAddr {
        let t = TrustedProxies::new(&trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        t.caller(ip(peer), xff.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn networks_parse_and_contain() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.200.3.4")) && !n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let n: Network = "2001:db8::/32".parse().unwrap();
        assert!(n.contains(ip("2001:db8:ffff::1")) && !n.contains(ip("2001:db9::1")));
        let n: Network = "192.0.2.7".parse().unwrap();
        assert!(n.contains(ip("192.0.2.7")) && !n.contains(ip("192.0.2.8")));
        assert!(
            "0.0.0.0/0"
                .parse::<Network>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("10.0.0/8".parse::<Network>().is_err());
        assert!("".parse::<Network>().is_err());
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        // Nothing trusted: the header is anybody's word.
        assert_eq!(
            caller(&[], "198.51.100.1", &["203.0.113.9"]),
            ip("198.51.100.1")
        );
        // An untrusted peer.
        assert_eq!(
            caller(&["10.0.0.0/8"], "198.51.100.1", &["203.0.113.9"]),
            ip("198.51.100.1")
        );
        // The proxy's entry: the rightmost untrusted address.
        assert_eq!(
            caller(&["10.0.0.0/8"], "10.0.0.2", &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        // A chain of proxies; what the caller wrote itself further left is ignored.
        assert_eq!(
            caller(
                &["10.0.0.0/8"],
                "10.0.0.2",
                &["6.6.6.6, 203.0.113.9", "10.0.0.5"]
            ),
            ip("203.0.113.9")
        );
        // Ports, IPv6.
        assert_eq!(
            caller(&["10.0.0.0/8"], "10.0.0.2", &["[2001:db8::7]:4431"]),
            ip("2001:db8::7")
        );
        // No header, or a proxy writing garbage: the nearest trusted hop.
        assert_eq!(caller(&["10.0.0.0/8"], "10.0.0.2", &[]), ip("10.0.0.2"));
        assert_eq!(
            caller(&["10.0.0.0/8"], "10.0.0.2", &["junk"]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn a_long_header_is_not_walked_to_its_end() {
        let long = vec!["10.0.0.1"; 1000].join(",");
        assert_eq!(
            caller(
                &["10.0.0.0/8"],
                "10.0.0.2",
                &[&format!("203.0.113.9,{long}")]
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn limit_keys_group_an_ipv6_line_and_keep_ipv4_whole() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(limit_key(ip("192.0.2.1")), limit_key(ip("192.0.2.2")));
        assert_eq!(
            limit_key(ip("192.0.2.1")),
            limit_key(ip("::ffff:192.0.2.1"))
        );
    }
}
