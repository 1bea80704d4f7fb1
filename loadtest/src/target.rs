//! The server under test: a `ws://` URL parsed into a socket address, and the loopback-only guard.
//!
//! Owns the safety rule that the harness only ever connects to 127.0.0.0/8 or ::1. The rule is applied
//! to the literal address in the URL before any socket exists, so a refused target is never contacted,
//! not even for name resolution: a host name (even `localhost`) is refused because resolving it would
//! leave the decision to `/etc/hosts` and DNS. It does not own connecting (see `client`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A validated loopback WebSocket endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where to connect; always a loopback address.
    pub addr: SocketAddr,
    /// The `Host` header value, as written in the URL.
    pub host_header: String,
    /// The request path (with query), `/` when the URL has none.
    pub path: String,
}

/// Why a URL is not a target the harness may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// The scheme is not `ws://` (`wss://` would need TLS, which the harness does not speak).
    Scheme(String),
    /// The host is a name or otherwise not an IP literal.
    NotAnAddress(String),
    /// The address is an IP outside 127.0.0.0/8 and ::1.
    NotLoopback(IpAddr),
    /// The port is missing a number or out of range.
    Port(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Scheme(url) => write!(f, "`{url}`: only ws:// URLs are supported"),
            TargetError::NotAnAddress(host) => write!(
                f,
                "`{host}` is not an IP address: the harness only connects to 127.0.0.0/8 or [::1], written as such"
            ),
            TargetError::NotLoopback(ip) => write!(
                f,
                "{ip} is not a loopback address: the harness refuses targets outside 127.0.0.0/8 and ::1"
            ),
            TargetError::Port(port) => write!(f, "`{port}` is not a port number"),
        }
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH]`; HOST must be a loopback IP literal (`[::1]` for IPv6).
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| TargetError::Scheme(url.to_owned()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority)?;
        let ip: IpAddr = host
            .parse()
            .map_err(|_| TargetError::NotAnAddress(host.to_owned()))?;
        if !is_loopback(ip) {
            return Err(TargetError::NotLoopback(ip));
        }
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host_header: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// 127.0.0.0/8 and ::1 only; IPv4-mapped IPv6 loopback (`::ffff:127.x`) counts as IPv4 loopback.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16), TargetError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let end = bracketed
            .find(']')
            .ok_or_else(|| TargetError::NotAnAddress(authority.to_owned()))?;
        let after = &bracketed[end + 1..];
        (&bracketed[..end], after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| TargetError::Port(p.to_owned()))?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_v4_and_v6_are_accepted() {
        let t = Target::parse("ws://127.0.0.1:9090/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(t.path, "/");
        assert_eq!(t.host_header, "127.0.0.1:9090");
        assert!(Target::parse("ws://127.1.2.3:1/chat?x=1").is_ok());
        assert_eq!(Target::parse("ws://[::1]:9090").unwrap().addr.port(), 9090);
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(matches!(
            Target::parse("ws://10.0.0.1:9090/"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("ws://example.com/"),
            Err(TargetError::NotAnAddress(_))
        ));
        assert!(matches!(
            Target::parse("ws://localhost:9090/"),
            Err(TargetError::NotAnAddress(_))
        ));
        assert!(matches!(
            Target::parse("wss://127.0.0.1/"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("ws://[::2]:9090/"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("ws://127.0.0.1:x/"),
            Err(TargetError::Port(_))
        ));
    }
}
