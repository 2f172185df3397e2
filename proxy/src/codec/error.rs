//! Why a byte stream could not be turned into MessagePack-RPC frames. "Not enough bytes yet" is not
//! here: the decoder answers `Ok(None)` for that.

use thiserror::Error;

/// A frame was rejected, or the connection under the codec failed.
///
/// Every variant except [`CodecError::Io`] means the peer sent something the proxy will not
/// forward; the connection's byte stream cannot be resynchronised afterwards (there is no length
/// prefix), so the caller should answer or drop the connection, not keep decoding.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The frame needs more bytes than [`Limits::max_frame_bytes`](super::Limits): either a header
    /// declared a string, binary, array or map length that cannot fit, or the bytes read so far
    /// already exceed the limit.
    #[error("frame too large: needs at least {needed} bytes, limit is {max}")]
    FrameTooLarge {
        /// Smallest frame size (bytes) implied by what has been read so far.
        needed: u64,
        /// The configured limit (bytes).
        max: usize,
    },
    /// Arrays and maps are nested deeper than [`Limits::max_depth`](super::Limits).
    #[error("frame nests arrays/maps deeper than {max} levels")]
    TooDeep {
        /// The configured limit (levels, the top-level array counts as one).
        max: usize,
    },
    /// Valid MessagePack, but not a MessagePack-RPC request, response or notification.
    #[error("not a MessagePack-RPC frame: {reason}")]
    NotRpc {
        /// What was expected and not found.
        reason: &'static str,
    },
    /// Bytes that are not MessagePack (a reserved type byte), or a whole-frame buffer that is
    /// truncated or has trailing bytes.
    #[error("invalid MessagePack at byte {offset}: {reason}")]
    InvalidMessagePack {
        /// Offset from the start of the frame.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame that had arrived.
        buffered: usize,
    },
    /// [`Frame::rewrite`](super::Frame::rewrite) was asked to replace a field the frame does not
    /// have (a msgid on a notification, a RequestID on a frame without one).
    #[error("cannot rewrite frame: {reason}")]
    NotRewritable {
        /// Which field is missing.
        reason: &'static str,
    },
    /// Reading or writing the underlying connection failed.
    #[error("i/o error on the connection")]
    Io(#[from] std::io::Error),
}
