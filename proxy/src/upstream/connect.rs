//! What every agent connection starts from: the upstream settings and one connect, bounded by
//! its deadline and counted by outcome. Below both modes (`mux`, `per_call`) and the readmission
//! probe, which all connect this way.

use std::sync::Arc;
use std::time::Duration;

use agent_pool::Address;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, timeout_at};

use super::queued::QueuedBytes;
use crate::codec::Limits;
use crate::config::UpstreamMode;
use crate::error::UpstreamError;
use crate::metrics as m;
use crate::stream::Stream;

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConfig {
    /// Mux or per-call.
    pub(crate) mode: UpstreamMode,
    /// Persistent connections per agent (mux).
    pub(crate) connections: usize,
    /// Connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Frame limits for what agents send.
    pub(crate) limits: Limits,
    /// Bytes queued to agents, every connection together (mux).
    pub(crate) queued: Arc<QueuedBytes>,
}

/// Connects to `address`, giving up at `deadline`.
pub(crate) async fn connect(address: &Address, deadline: Instant) -> Result<Stream, UpstreamError> {
    let attempt = async {
        match address {
            Address::Tcp(sa) => {
                let s = TcpStream::connect(sa).await?;
                s.set_nodelay(true)?;
                Ok(Stream::tcp(s))
            }
            Address::Unix(path) => UnixStream::connect(path).await.map(Stream::unix),
        }
    };
    match timeout_at(deadline, attempt).await {
        Ok(Ok(c)) => {
            m::upstream_connect(m::UpstreamConnect::Ok);
            Ok(c)
        }
        Ok(Err(e)) => {
            m::upstream_connect(m::UpstreamConnect::Error);
            Err(UpstreamError::ConnectFailed(e))
        }
        Err(_) => {
            m::upstream_connect(m::UpstreamConnect::Timeout);
            Err(UpstreamError::ConnectTimeout)
        }
    }
}
