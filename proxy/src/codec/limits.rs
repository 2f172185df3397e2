//! What the decoder accepts from a peer: the largest frame and the deepest nesting. A file of
//! its own, below the scanner and the frame that enforce it.

/// Bounds on what the decoder accepts from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, in bytes (default [`Limits::DEFAULT_MAX_FRAME_BYTES`], 4 MiB). A header that
    /// declares a string, binary, array or map that cannot fit is rejected before its bytes arrive.
    pub max_frame_bytes: usize,
    /// Deepest nesting of arrays and maps, the top-level array counting as one (default
    /// [`Limits::DEFAULT_MAX_DEPTH`], 32).
    pub max_depth: usize,
}

impl Limits {
    /// Default [`Limits::max_frame_bytes`]: 4 MiB. Go's `net/http` takes 1 MB of headers by
    /// default and modules send the body too: every request a real module can send fits.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 << 20;
    /// Default [`Limits::max_depth`]: 32 levels (real frames use 4).
    pub const DEFAULT_MAX_DEPTH: usize = 32;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}
