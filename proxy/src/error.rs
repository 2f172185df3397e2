//! Errors of the proxy's data path. As in pingora-error, each error knows which side failed
//! (the module that connected to us, or an agent) and whether the RPC may be retried on another
//! agent.

use std::io;

use agent_pool::Outcome;

use crate::codec::CodecError;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The downstream module (malformed frames, slow or closed connection).
    Client,
    /// An upstream agent (refused, timed out, broke the connection, answered garbage).
    Agent,
    /// The proxy itself (no agent available, limits).
    Proxy,
}

/// Whether a failed RPC may go to another agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryType {
    /// Nothing reached an agent: any RPC may be retried.
    Safe,
    /// The request may have reached the agent, but no answer came back: only RPCs whose
    /// repetition is harmless (PreRequest, ModuleInit) may be retried.
    IfIdempotent,
    /// Never (the deadline is spent, or there is nobody to retry on).
    Never,
}

/// Why an RPC to an agent failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No agent accepts new work.
    #[error("no agent available")]
    NoAgent,
    /// Connecting to the agent failed; nothing was sent.
    #[error("connect to agent failed: {0}")]
    Connect(#[source] io::Error),
    /// Connecting to the agent took longer than the connect timeout; nothing was sent.
    #[error("connect to agent timed out")]
    ConnectTimeout,
    /// The connection to the agent broke after the request was handed to it, before an answer.
    #[error("agent connection failed: {0}")]
    Broken(#[source] io::Error),
    /// The agent sent bytes that are not a valid frame.
    #[error("agent sent an invalid frame: {0}")]
    Protocol(#[source] CodecError),
    /// No answer before the RPC's deadline.
    #[error("agent did not answer in time")]
    Timeout,
}

impl UpstreamError {
    /// Which side failed.
    pub(crate) fn side(&self) -> Side {
        match self {
            Self::NoAgent => Side::Proxy,
            _ => Side::Agent,
        }
    }

    /// Whether another agent may be tried.
    pub(crate) fn retry(&self) -> RetryType {
        match self {
            Self::Connect(_) | Self::ConnectTimeout => RetryType::Safe,
            Self::Broken(_) | Self::Protocol(_) => RetryType::IfIdempotent,
            Self::NoAgent | Self::Timeout => RetryType::Never,
        }
    }

    /// What the agent's passive health should learn from it.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Self::Connect(_) | Self::ConnectTimeout | Self::Broken(_) => Outcome::ConnectFailure,
            Self::Timeout => Outcome::Timeout,
            Self::NoAgent | Self::Protocol(_) => Outcome::Failed,
        }
    }

    /// Why the module's call went uninspected when this error ended it.
    pub(crate) fn uninspected(&self) -> crate::metrics::Uninspected {
        use crate::metrics::Uninspected;
        match self {
            Self::NoAgent => Uninspected::NoAgent,
            Self::Timeout => Uninspected::Deadline,
            _ => Uninspected::AgentFailed,
        }
    }

    /// A metrics label (closed set).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::NoAgent => "no_agent",
            Self::Connect(_) | Self::ConnectTimeout => "connect_failure",
            Self::Broken(_) => "upstream_broken",
            Self::Protocol(_) => "upstream_protocol",
            Self::Timeout => "timeout",
        }
    }
}

/// Why a downstream connection was closed by the proxy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The module sent something that is not a valid frame, or one too large.
    #[error("invalid frame from client: {0}")]
    Malformed(#[source] CodecError),
    /// A frame started but did not complete within the frame read timeout.
    #[error("frame not completed in time")]
    SlowFrame,
    /// Reading or writing the socket failed.
    #[error("client connection failed: {0}")]
    Io(#[source] io::Error),
}

impl ClientError {
    /// Always the client.
    pub(crate) fn side(&self) -> Side {
        Side::Client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_safe_to_retry_and_count_for_ejection() {
        let e = UpstreamError::ConnectTimeout;
        assert_eq!(e.retry(), RetryType::Safe);
        assert_eq!(e.outcome(), Outcome::ConnectFailure);
        assert_eq!(e.side(), Side::Agent);
        assert_eq!(UpstreamError::Timeout.retry(), RetryType::Never);
        assert_eq!(UpstreamError::NoAgent.side(), Side::Proxy);
        assert_eq!(ClientError::SlowFrame.side(), Side::Client);
    }
}
