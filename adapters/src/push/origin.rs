//! Where a push pool's requests go: the provider's base URL, read once when the pool
//! is made, so that a bad URL is a start-up error naming it and each push only adds
//! its path.

use http::uri::{Authority, PathAndQuery, Scheme, Uri};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the base URL {url:?} {problem}")]
pub struct OriginError {
    pub url: String,
    pub problem: String,
}

/// A provider's scheme, host and port, and the path its requests' paths go under.
#[derive(Debug, Clone)]
pub struct Origin {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The host to connect to and to name in TLS, without an IPv6 literal's brackets.
    pub host: String,
    pub port: u16,
    /// `https`: TLS with ALPN `h2`; `http`: HTTP/2 spoken at once (h2c).
    pub tls: bool,
    /// Prefix of every request's path (empty, or `/…` without a trailing slash).
    pub base_path: String,
}

impl Origin {
    pub fn parse(url: &str) -> Result<Origin, OriginError> {
        let fail = |problem: String| OriginError {
            url: url.to_string(),
            problem,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| fail(format!("is not a URL: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(fail(format!(
                    "has scheme {other:?}: it must be https (or http for HTTP/2 without TLS)"
                )));
            }
            None => return Err(fail("has no scheme: write https://host[:port]".into())),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| fail("has no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(fail(
                "carries credentials: give them in the provider's settings".into(),
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(fail("has no host".into()));
        }
        if uri.query().is_some() {
            return Err(fail(
                "has a query: a base URL is scheme, host, port and path".into(),
            ));
        }
        Ok(Origin {
            scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority,
            host,
            tls,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The full URI of `path` (which starts with `/`) at this origin.
    pub fn uri(&self, path: &str) -> Result<Uri, http::Error> {
        let path = if self.base_path.is_empty() {
            PathAndQuery::try_from(path)?
        } else {
            PathAndQuery::try_from(format!("{}{path}", self.base_path))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scheme_host_port_and_path() {
        let o = Origin::parse("https://api.push.apple.com").unwrap();
        assert!(o.tls);
        assert_eq!(
            (o.host.as_str(), o.port, o.base_path.as_str()),
            ("api.push.apple.com", 443, "")
        );
        assert_eq!(
            o.uri("/3/device/abc").unwrap().to_string(),
            "https://api.push.apple.com/3/device/abc"
        );

        let o = Origin::parse("http://127.0.0.1:8080/prefix/").unwrap();
        assert!(!o.tls);
        assert_eq!(
            (o.host.as_str(), o.port, o.base_path.as_str()),
            ("127.0.0.1", 8080, "/prefix")
        );
        assert_eq!(
            o.uri("/v1/x:send").unwrap().to_string(),
            "http://127.0.0.1:8080/prefix/v1/x:send"
        );

        let o = Origin::parse("https://[::1]:8443").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 8443));
        assert_eq!(o.uri("/a").unwrap().to_string(), "https://[::1]:8443/a");
    }

    #[test]
    fn a_bad_base_url_is_refused_with_what_is_wrong() {
        for (url, what) in [
            ("", "not a URL"),
            ("api.push.apple.com", "no scheme"),
            ("ftp://host", "must be https"),
            ("https://user:pw@host", "credentials"),
            ("https://host/?a=1", "query"),
            ("https://ho st", "not a URL"),
        ] {
            let e = Origin::parse(url).unwrap_err().to_string();
            assert!(e.contains(what), "{url:?}: {e}");
            assert!(e.contains(&format!("{url:?}")), "{e}");
        }
    }

    #[test]
    fn a_path_that_is_not_a_path_is_an_error_not_a_panic() {
        let o = Origin::parse("https://host").unwrap();
        assert!(o.uri("/bad path").is_err());
    }
}
