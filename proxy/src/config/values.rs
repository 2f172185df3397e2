//! The value types of options: listen addresses, durations with units, octal modes, enums,
//! and the `host:port` and `NAMESPACE/SERVICE[:PORT]` forms.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

/// Where the proxy accepts module connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ListenAddr {
    /// TCP `host:port` (`0` picks a free port).
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:/path`).
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("a unix listener needs a path, e.g. unix:/var/run/sigsci.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("`{s}` is neither `ip:port` nor `unix:/path`"))
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// File permissions written in octal (`0660`, `660` or `0o660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Mode(pub u32);

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(Mode(m)),
            _ => Err(format!("`{s}` is not an octal mode (examples: 0666, 0660)")),
        }
    }
}

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How the proxy talks to agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMode {
    /// A few persistent connections per agent, RPCs multiplexed by proxy-assigned msgids.
    Mux,
    /// A new connection for every RPC, as the modules themselves do.
    PerCall,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration written with a unit: `250us`, `20ms`, `1.5s`, `2m` (humantime's syntax, the same
/// as the loadtest's). A bare number is rejected, `0` excepted: `10` could mean seconds or
/// milliseconds, and a timeout off by a thousand fails silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("`{s}` is not a duration: {e} (examples: 200us, 20ms, 1.5s, 2m)"))
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

impl fmt::Display for Dur {
    /// The form `FromStr` reads back (`80ms`, `1m 30s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// `host:port` (IPv6 as `[::1]:port`) split in two, the port checked.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` is not a port number"))?;
    if port == 0 {
        return Err("port 0 cannot be dialled".into());
    }
    Ok((host, port))
}

pub(super) fn parse_k8s(s: &str) -> Result<(String, String, Option<String>), String> {
    let (namespace, rest) = s
        .split_once('/')
        .ok_or("expected NAMESPACE/SERVICE[:PORTNAME]")?;
    let (service, port_name) = match rest.split_once(':') {
        Some((svc, port)) => (svc, Some(port.to_owned())),
        None => (rest, None),
    };
    if namespace.is_empty() || service.is_empty() || port_name.as_deref() == Some("") {
        return Err("expected NAMESPACE/SERVICE[:PORTNAME]".into());
    }
    Ok((namespace.to_owned(), service.to_owned(), port_name))
}
