//! What a membership source knows about an agent: its identity, its address and whether it
//! still takes new work, plus the [`Update`]s every source yields. The address forms here
//! ([`Address`], [`HostPort`]) are the ones every option of the workspace reads: the proxy's
//! listeners and agents, and the loadtest's targets.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The stable identity of an agent: its pod name when the source knows it (Kubernetes), else
/// the text of its address. Two endpoints with the same id are the same agent, across
/// membership changes, proxy replicas and proxy restarts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(Arc<str>);

impl EndpointId {
    /// An id from any text.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for EndpointId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for EndpointId {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<&Address> for EndpointId {
    fn from(a: &Address) -> Self {
        Self(a.to_string().into())
    }
}

impl Serialize for EndpointId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EndpointId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// Where an agent (or the proxy) listens for RPC: TCP (`1.2.3.4:9999`, `[::1]:9999`) or a Unix
/// socket (`unix:/var/run/sigsci.sock`). `Display` and `FromStr` use those forms.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
}

/// Why a text is not an [`Address`].
#[derive(Debug, thiserror::Error)]
#[error("invalid address {text:?}: expected IP:PORT, [IPv6]:PORT or unix:/path")]
pub struct AddressError {
    /// The rejected text.
    pub text: String,
    /// Why the socket address did not parse.
    #[source]
    pub source: Option<std::net::AddrParseError>,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => a.fmt(f),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError {
                    text: s.to_owned(),
                    source: None,
                });
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        s.parse().map(Address::Tcp).map_err(|e| AddressError {
            text: s.to_owned(),
            source: Some(e),
        })
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `HOST:PORT` where the host may be a name to resolve (`agent-0.agents:9999`,
/// `sigsci-agent.sigsci.svc:9999`) or an IP literal (`10.0.0.7:9999`, `[::1]:9999`): how an
/// option names something to dial before it is resolved to an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The name or IP literal, without the brackets of an IPv6 literal.
    pub host: String,
    /// The port, never 0 (it cannot be dialled).
    pub port: u16,
}

/// Why a text is not a [`HostPort`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host:port {text:?}: {why}")]
pub struct HostPortError {
    /// The rejected text.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| HostPortError {
            text: text.to_owned(),
            why,
        };
        let s = text.trim();
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT".into()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("the host is empty".into()));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad(format!("`{port}` is not a port number")))?;
        if port == 0 {
            return Err(bad("port 0 cannot be dialled".into()));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Whether the source says an endpoint takes new work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// Takes new PreRequests.
    #[default]
    Ready,
    /// Shutting down: gets no new PreRequests but still serves the UpdateRequests for the
    /// RequestIDs it issued.
    Terminating,
}

/// One agent as a membership source reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable identity (pod name, else the address text).
    pub id: EndpointId,
    /// Where it listens.
    pub address: Address,
    /// Ready or terminating.
    pub state: SourceState,
}

impl Endpoint {
    /// A ready endpoint whose id is its address text.
    pub fn new(address: Address) -> Self {
        Self {
            id: EndpointId::from(&address),
            address,
            state: SourceState::Ready,
        }
    }

    /// The same endpoint with another id (e.g. the pod name).
    pub fn with_id(mut self, id: impl Into<EndpointId>) -> Self {
        self.id = id.into();
        self
    }

    /// The same endpoint in another state.
    pub fn with_state(mut self, state: SourceState) -> Self {
        self.state = state;
        self
    }
}

/// A change of membership. Every source yields these (docs/style.md #8): a static list is one
/// `Reset` and then silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete membership: every known agent not listed leaves (turns gone).
    Reset(Vec<Endpoint>),
    /// One agent joins or changes address or state.
    Upsert(Endpoint),
    /// One agent leaves (turns gone, kept for the grace period).
    Remove(EndpointId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_text() {
        for text in ["10.0.0.7:9999", "[::1]:9999", "unix:/var/run/sigsci.sock"] {
            let a: Address = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
        assert!("nonsense".parse::<Address>().is_err());
        assert!("unix:".parse::<Address>().is_err());
        assert!("10.0.0.7".parse::<Address>().is_err());
    }

    #[test]
    fn host_ports_take_names_and_literals_and_refuse_what_cannot_be_dialled() {
        for (text, host, port) in [
            ("agent-0.agents:9999", "agent-0.agents", 9999),
            ("10.0.0.7:9999", "10.0.0.7", 9999),
            ("[::1]:9999", "::1", 9999),
        ] {
            let hp: HostPort = text.parse().unwrap();
            assert_eq!((hp.host.as_str(), hp.port), (host, port));
            assert_eq!(hp.to_string(), text, "round trip");
        }
        for (text, why) in [
            ("nohost", "expected HOST:PORT"),
            (":9999", "the host is empty"),
            ("agents:http", "not a port number"),
            ("agents:0", "port 0"),
        ] {
            let err = text.parse::<HostPort>().expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(
                err.contains(&format!("{text:?}")),
                "{text}: quotes it: {err}"
            );
        }
    }

    #[test]
    fn an_endpoint_without_a_name_is_known_by_its_address() {
        let e = Endpoint::new("10.0.0.7:9999".parse().unwrap());
        assert_eq!(e.id.as_str(), "10.0.0.7:9999");
        assert_eq!(e.state, SourceState::Ready);
    }
}
