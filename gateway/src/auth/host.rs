//! Which `Host` and browser `Origin` values a request may carry: the defence against DNS
//! rebinding and cross-site pages.
//!
//! DNS rebinding points a name the attacker controls at this machine: the browser then sends
//! `Host: evil.example:PORT` to the gateway, and treats the answer as same-origin to the attacker's
//! page. So `Host` must be a name this gateway knows it is reached by: a loopback name
//! (`localhost`, with the listen port or none), an IP address (a page can only be same-origin
//! with an IP literal if it was loaded from that very address, so literals cannot be rebound), or
//! a name given with `--allowed-host`. An `Origin` must be allowed on its own, not merely equal
//! to `Host`: a loopback origin from a loopback peer (local tools and dev servers, as OpenClaw
//! allows), an `--allowed-host` name, or the request's own `Host` when that is allowed.

use std::net::IpAddr;

/// The allowlist: loopback names and IP literals always, plus the configured public names.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    listen_port: u16,
    /// Lowercase names without a trailing dot, with the one port allowed (`None`: any port).
    names: Vec<(String, Option<u16>)>,
}

/// A `host[:port]` split into a normalised name (lowercase, no brackets or trailing dot) and port.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.contains(':') && host.parse::<IpAddr>().is_err() {
        return None;
    }
    Some((host, port))
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl HostPolicy {
    /// `names`: `--allowed-host` values, `name` (any port) or `name:port`.
    pub fn new(listen_port: u16, names: &[String]) -> Result<HostPolicy, String> {
        let names = names
            .iter()
            .map(|n| split_authority(n).ok_or_else(|| format!("--allowed-host {n:?} is not a host name")))
            .collect::<Result<_, _>>()?;
        Ok(HostPolicy { listen_port, names })
    }

    fn configured(&self, host: &str, port: Option<u16>) -> bool {
        self.names.iter().any(|(name, allowed)| name == host && (allowed.is_none() || *allowed == port))
    }

    /// Whether a request's `Host` header names this gateway.
    pub fn host_allowed(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_authority(host_header) else { return false };
        if host.parse::<IpAddr>().is_ok() {
            return true;
        }
        if host == "localhost" {
            return port.is_none() || port == Some(self.listen_port);
        }
        self.configured(&host, port)
    }

    /// Whether a browser page at `origin` may use this gateway; `host_header` is the request's
    /// `Host`, `peer_loopback` whether the connection comes from this machine.
    pub fn origin_allowed(&self, origin: &str, host_header: Option<&str>, peer_loopback: bool) -> bool {
        let Some((scheme, rest)) = origin.trim().split_once("://") else { return false };
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return false;
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let Some((host, port)) = split_authority(authority) else { return false };
        if peer_loopback && is_loopback_name(&host) {
            return true;
        }
        if self.configured(&host, port) {
            return true;
        }
        host_header
            .is_some_and(|header| self.host_allowed(header) && split_authority(header) == Some((host, port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostPolicy {
        HostPolicy::new(18790, &["dash.example".into(), "Other.Example:8443".into()]).unwrap()
    }

    #[test]
    fn hosts() {
        let p = policy();
        for ok in [
            "127.0.0.1:18790",
            "127.0.0.1",
            "localhost:18790",
            "LOCALHOST",
            "[::1]:18790",
            "10.0.0.7:18790",
            "[fe80::1]",
            "dash.example",
            "dash.example:443",
            "dash.example.",
            "other.example:8443",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:18790",
            "localhost:9999",
            "other.example",
            "other.example:443",
            "",
            "a b",
            "x@127.0.0.1",
            "[::1",
            "127.0.0.1:99999",
            "sub.dash.example",
        ] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        assert!(HostPolicy::new(1, &["bad host/".into()]).is_err());
    }

    #[test]
    fn origins() {
        let p = policy();
        let host = Some("127.0.0.1:18790");
        assert!(p.origin_allowed("http://127.0.0.1:18790", host, true));
        assert!(p.origin_allowed("http://localhost:5173", host, true));
        assert!(
            !p.origin_allowed("http://localhost:5173", host, false),
            "loopback origins only for loopback peers"
        );
        assert!(p.origin_allowed("https://dash.example", Some("dash.example"), false));
        assert!(p.origin_allowed("https://other.example:8443/", None, false));
        assert!(p.origin_allowed("http://10.0.0.7:18790", Some("10.0.0.7:18790"), false));
        for bad in [
            "https://evil.example",
            "null",
            "",
            "file://",
            "chrome-extension://abc",
            "http://evil.example:18790",
        ] {
            assert!(!p.origin_allowed(bad, host, true), "{bad}");
        }
        // Equal to a rebound Host is not enough.
        assert!(!p.origin_allowed("http://evil.example:18790", Some("evil.example:18790"), true));
    }
}
