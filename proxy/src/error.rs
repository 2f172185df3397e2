//! Errors of the proxy's data path. As in pingora-error, each error knows which side failed
//! (the module that connected to us, or an agent) and whether the RPC may be retried on another
//! agent.

use std::io;

use agent_pool::Outcome;

use crate::admission::Shed;
use crate::codec::{CodecError, Frame};
use crate::metrics::{ConnectionClose, RpcOutcome, Uninspected};

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
    /// Nothing reached an agent: any RPC may go elsewhere (an UpdateRequest routed by its token
    /// still has only one right agent).
    Safe,
    /// The agent may have seen the request but gave no usable answer: only calls whose repetition
    /// costs at most a second inspection (PreRequest, ModuleInit) go elsewhere. An uninspected
    /// request is worse than one inspected twice.
    IfRepeatable,
    /// Never (the deadline is spent, or the request itself is at fault).
    Never,
}

/// Why an RPC to an agent failed, named by what happened: each has its own retry rule and its
/// own lesson for the agent's passive health.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No agent accepts new work.
    #[error("no agent available")]
    NoAgent,
    /// Connecting to the agent failed; nothing was sent.
    #[error("connect to agent failed: {0}")]
    ConnectFailed(#[source] io::Error),
    /// Connecting to the agent took longer than the connect timeout; nothing was sent.
    #[error("connect to agent timed out")]
    ConnectTimeout,
    /// The agent connection failed before the request was written; nothing was sent.
    #[error("agent connection closed before the request was sent: {0}")]
    NotSent(#[source] io::Error),
    /// The agent connection's send queue is full: the agent is busy, not broken; nothing was
    /// sent.
    #[error("agent connection backlogged")]
    Backlogged,
    /// The request could not be prepared for the agent (it lacks a field the proxy rewrites);
    /// nothing was sent, and nothing else would take it either.
    #[error("request cannot be forwarded: {0}")]
    Unsendable(#[source] CodecError),
    /// The connection broke after the request was handed to it, before an answer.
    #[error("agent connection failed after the request was sent: {0}")]
    SentNoAnswer(#[source] io::Error),
    /// The agent sent bytes that are not a valid frame.
    #[error("agent sent an invalid frame: {0}")]
    Protocol(#[source] CodecError),
    /// The agent answered with an error frame (kept, to pass on if no other agent answers).
    #[error("agent answered with an error")]
    AgentError(Box<Frame>),
    /// No answer before the RPC's deadline.
    #[error("agent did not answer in time")]
    Timeout,
}

impl UpstreamError {
    /// Which side failed.
    pub(crate) fn side(&self) -> Side {
        match self {
            Self::NoAgent => Side::Proxy,
            Self::Unsendable(_) => Side::Client,
            _ => Side::Agent,
        }
    }

    /// Whether another agent may be tried.
    pub(crate) fn retry(&self) -> RetryType {
        match self {
            Self::ConnectFailed(_) | Self::ConnectTimeout | Self::NotSent(_) | Self::Backlogged => {
                RetryType::Safe
            }
            Self::SentNoAnswer(_) | Self::Protocol(_) | Self::AgentError(_) => {
                RetryType::IfRepeatable
            }
            Self::NoAgent | Self::Unsendable(_) | Self::Timeout => RetryType::Never,
        }
    }

    /// What the agent's passive health should learn from it.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Self::ConnectFailed(_) | Self::ConnectTimeout | Self::NotSent(_) => {
                Outcome::ConnectFailure
            }
            Self::Timeout => Outcome::Timeout,
            Self::AgentError(_) => Outcome::ErrorAnswer,
            Self::SentNoAnswer(_) | Self::Protocol(_) => Outcome::Failed,
            Self::NoAgent | Self::Backlogged | Self::Unsendable(_) => Outcome::Busy,
        }
    }

    /// Why the module's call went uninspected when this error ended it.
    pub(crate) fn uninspected(&self) -> crate::metrics::Uninspected {
        use crate::metrics::Uninspected;
        match self {
            Self::NoAgent => Uninspected::NoAgent,
            Self::Timeout => Uninspected::Deadline,
            Self::AgentError(_) => Uninspected::AgentError,
            Self::Unsendable(_) => Uninspected::InvalidFrame,
            _ => Uninspected::AgentFailed,
        }
    }

    /// The `outcome` of `sigsci_proxy_rpcs_total`.
    pub(crate) fn rpc_outcome(&self) -> RpcOutcome {
        match self {
            Self::NoAgent => RpcOutcome::NoAgent,
            Self::ConnectFailed(_) | Self::ConnectTimeout => RpcOutcome::ConnectFailure,
            Self::NotSent(_) => RpcOutcome::NotSent,
            Self::Backlogged => RpcOutcome::Backlogged,
            Self::Unsendable(_) => RpcOutcome::Unsendable,
            Self::SentNoAnswer(_) => RpcOutcome::UpstreamBroken,
            Self::Protocol(_) => RpcOutcome::UpstreamProtocol,
            Self::AgentError(_) => RpcOutcome::AgentError,
            Self::Timeout => RpcOutcome::Timeout,
        }
    }
}

/// Why a downstream connection was closed by the proxy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The module sent something that is not a valid frame, or one too large.
    #[error("invalid frame from client: {0}")]
    Malformed(#[source] CodecError),
    /// A frame that is no module's call and has no msgid to answer (a notification).
    #[error("not a call: {0}")]
    NotACall(&'static str),
    /// An answer could not be written within the write timeout (the module does not read).
    #[error("answer not written in time")]
    WriteTimeout,
    /// Shed to protect the others: the longest idle at the connection limit, or the largest
    /// holder of partly received bytes over the budget.
    #[error("connection shed: {0:?}")]
    Shed(Shed),
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

    /// The `reason` of `sigsci_proxy_connections_closed_total`.
    pub(crate) fn label(&self) -> ConnectionClose {
        match self {
            Self::Malformed(_) | Self::NotACall(_) => ConnectionClose::Malformed,
            Self::SlowFrame => ConnectionClose::SlowFrame,
            Self::WriteTimeout => ConnectionClose::WriteTimeout,
            Self::Shed(Shed::Budget) => ConnectionClose::FrameBudget,
            Self::Shed(Shed::Idle) => ConnectionClose::EvictedIdle,
            Self::Io(_) => ConnectionClose::Io,
        }
    }

    /// Why the call on the connection went uninspected, when one did: an evicted idle
    /// connection had none, and a failed socket is the module's own end (counted nowhere).
    pub(crate) fn uninspected(&self) -> Option<Uninspected> {
        match self {
            Self::Malformed(CodecError::FrameTooLarge { .. }) => Some(Uninspected::FrameTooLarge),
            Self::Malformed(_) | Self::NotACall(_) => Some(Uninspected::InvalidFrame),
            Self::SlowFrame => Some(Uninspected::SlowFrame),
            Self::WriteTimeout => Some(Uninspected::WriteTimeout),
            Self::Shed(Shed::Budget) => Some(Uninspected::FrameBudget),
            Self::Shed(Shed::Idle) | Self::Io(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_retry_rule_and_health_lesson() {
        let io = || io::Error::other("x");
        let cases = [
            (
                UpstreamError::ConnectFailed(io()),
                RetryType::Safe,
                Outcome::ConnectFailure,
            ),
            (
                UpstreamError::ConnectTimeout,
                RetryType::Safe,
                Outcome::ConnectFailure,
            ),
            (
                UpstreamError::NotSent(io()),
                RetryType::Safe,
                Outcome::ConnectFailure,
            ),
            // Busy, not dead: go elsewhere, no ejection.
            (UpstreamError::Backlogged, RetryType::Safe, Outcome::Busy),
            (
                UpstreamError::SentNoAnswer(io()),
                RetryType::IfRepeatable,
                Outcome::Failed,
            ),
            (UpstreamError::Timeout, RetryType::Never, Outcome::Timeout),
            (UpstreamError::NoAgent, RetryType::Never, Outcome::Busy),
        ];
        for (e, retry, outcome) in cases {
            assert_eq!((e.retry(), e.outcome()), (retry, outcome), "{e}");
        }
        assert_eq!(UpstreamError::Timeout.side(), Side::Agent);
        assert_eq!(UpstreamError::NoAgent.side(), Side::Proxy);
        assert_eq!(ClientError::SlowFrame.side(), Side::Client);
    }

    #[test]
    fn a_closed_connection_counts_its_reason_and_the_call_it_left_uninspected() {
        let too_large = ClientError::Malformed(CodecError::FrameTooLarge { needed: 2, max: 1 });
        assert_eq!(too_large.label(), ConnectionClose::Malformed);
        assert_eq!(too_large.uninspected(), Some(Uninspected::FrameTooLarge));
        let budget = ClientError::Shed(Shed::Budget);
        assert_eq!(budget.label(), ConnectionClose::FrameBudget);
        assert_eq!(budget.uninspected(), Some(Uninspected::FrameBudget));
        // Nothing was asked on an evicted idle connection; a failed socket is the module's.
        assert_eq!(ClientError::Shed(Shed::Idle).uninspected(), None);
        assert_eq!(ClientError::Io(io::Error::other("x")).uninspected(), None);
    }
}
