//! What a membership source knows about an agent: its identity, its address and whether it
//! still takes new work, plus the [`Update`]s every source yields.

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

/// Where an agent listens for RPC: TCP (`1.2.3.4:9999`, `[::1]:9999`) or a Unix socket
/// (`unix:/var/run/sigsci.sock`). `Display` and `FromStr` use those forms.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
}

/// Why a text is not an [`Address`].
#[derive(Debug, thiserror::Error)]
#[error("invalid agent address {text:?}: expected IP:PORT, [IPv6]:PORT or unix:/path")]
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
    fn an_endpoint_without_a_name_is_known_by_its_address() {
        let e = Endpoint::new("10.0.0.7:9999".parse().unwrap());
        assert_eq!(e.id.as_str(), "10.0.0.7:9999");
        assert_eq!(e.state, SourceState::Ready);
    }
}
