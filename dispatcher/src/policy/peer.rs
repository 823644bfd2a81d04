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

use std::net::{IpAddr, SocketAddr};

use crate::config::network::{Network, canonical};

/// Entries of `X-Forwarded-For` looked at, from the right: a chain of proxies is
/// short, and a long header must not cost a long walk.
const MAX_HOPS: usize = 16;

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
