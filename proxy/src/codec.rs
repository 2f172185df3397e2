//! MessagePack-RPC framing for the module ↔ agent protocol.
//!
//! The protocol has no length prefix: a frame is one complete MessagePack value. [`FrameCodec`]
//! finds each frame's end by walking the MessagePack structure incrementally (never re-reading
//! bytes, never deserializing the message), rejects oversized or too deeply nested input as soon as
//! a header makes that certain, and hands out [`Frame`]s: the original bytes plus the fields the
//! proxy routes on (kind, msgid, method, RequestID). Forwarding never re-encodes a message; only
//! [`Frame::rewrite`] changes the msgid and RequestID, into a copy of the frame.

mod error;
mod frame;
mod limits;
mod scan;
#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use error::CodecError;
pub use frame::{Frame, Method, error_response, update_response};
pub use limits::Limits;
pub use scan::FrameKind;

use scan::Scanner;

/// Most bytes reserved ahead of what has arrived.
const RESERVE_STEP: usize = 64 << 10;

/// `tokio_util` codec for MessagePack-RPC frames.
///
/// Decoding yields [`Frame`]s; the walk position is kept between calls, so each byte is examined
/// once however the stream is chunked. After an error the stream cannot be resynchronised: drop
/// the connection. Encoding a [`Frame`] or [`Bytes`] copies the bytes as they are, so a frame is
/// written in one piece.
#[derive(Debug)]
pub struct FrameCodec {
    limits: Limits,
    scanner: Scanner,
}

impl FrameCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameCodec {
            scanner: Scanner::new(&limits),
            limits,
        }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(Limits::default())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.scanner.scan(src, &self.limits) {
            Ok(Some(end)) => {
                let view = self.scanner.take_view();
                Ok(Some(Frame::from_parts(src.split_to(end).freeze(), view)))
            }
            Ok(None) => {
                // Reserve toward what the walk already knows it needs (a pending string), a step
                // at a time: a header's promise of megabytes costs no memory until the bytes
                // come, and growth still doubles, so a long payload is copied few times.
                let need = self.scanner.need();
                if need > src.len() {
                    src.reserve((need - src.len()).min(RESERVE_STEP));
                }
                Ok(None)
            }
            Err(e) => {
                self.scanner.reset();
                Err(e)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                self.scanner.reset();
                Err(CodecError::Truncated {
                    buffered: src.len(),
                })
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(frame.as_bytes());
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, bytes: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&bytes);
        Ok(())
    }
}
