//! `per-call` mode: a connection per RPC, for agents that would not multiplex.

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::FramedRead;

use super::connect::{UpstreamConfig, connect};
use crate::codec::{Frame, FrameCodec, FrameKind};
use crate::error::UpstreamError;
use crate::stream::Stream;
use agent_pool::Address;

/// Connect, send, read the one answer, close.
pub(super) async fn call(
    address: &Address,
    config: &UpstreamConfig,
    request: &Frame,
    request_id: Option<&[u8]>,
    deadline: Instant,
) -> Result<Frame, UpstreamError> {
    let connect_deadline = deadline.min(Instant::now() + config.connect_timeout);
    let bytes = match request_id {
        Some(id) => request
            .rewrite(None, Some(id))
            .map_err(UpstreamError::Unsendable)?
            .into_bytes(),
        None => request.clone().into_bytes(),
    };
    let stream = connect(address, connect_deadline).await?;
    exchange(stream, config, &bytes, request.msgid(), deadline).await
}

async fn exchange(
    mut stream: Stream,
    config: &UpstreamConfig,
    bytes: &[u8],
    msgid: Option<u64>,
    deadline: Instant,
) -> Result<Frame, UpstreamError> {
    match timeout_at(deadline, stream.write_all(bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(UpstreamError::SentNoAnswer(e)),
        Err(_) => return Err(UpstreamError::Timeout),
    }
    let mut frames = FramedRead::new(&mut *stream, FrameCodec::new(config.limits));
    loop {
        match timeout_at(deadline, frames.next()).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(None) => {
                return Err(UpstreamError::SentNoAnswer(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "agent closed the connection before answering",
                )));
            }
            Ok(Some(Err(e))) => return Err(UpstreamError::Protocol(e)),
            Ok(Some(Ok(frame))) => {
                if frame.kind() == FrameKind::Response && frame.msgid() == msgid {
                    return Ok(frame);
                }
            }
        }
    }
}
