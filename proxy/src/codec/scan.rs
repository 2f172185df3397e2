//! The incremental MessagePack walker that finds where a frame ends.
//!
//! The protocol has no length prefix, so the end of a frame is where its top-level value ends. The
//! [`Scanner`] reads one header at a time, skips string/binary/ext payloads without looking at them
//! and keeps a stack of open arrays and maps; its position survives between reads, so bytes are
//! never walked twice. On the way it records the few things the proxy routes on (kind, msgid,
//! method, where the `RequestID` string is), and it enforces [`Limits`] as soon as a header makes a
//! violation certain.

use super::error::CodecError;
use super::limits::Limits;

/// The MessagePack-RPC message type (the first element of the top-level array).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// `[0, msgid, method, params]`.
    #[default]
    Request,
    /// `[1, msgid, error, result]`.
    Response,
    /// `[2, method, params]` (the modules never send one; it must not crash anything).
    Notification,
}

/// Byte ranges and values recorded while walking one frame. Offsets are from the frame start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) kind: FrameKind,
    /// The msgid value (0 for notifications).
    pub(crate) msgid: u64,
    /// Header start and end of the msgid integer (`(0, 0)` for notifications).
    pub(crate) msgid_at: (usize, usize),
    /// Payload range of the method string (requests and notifications).
    pub(crate) method: Option<(usize, usize)>,
    /// Response whose error element is not nil.
    pub(crate) error: bool,
    /// The RequestID string: header start, payload start, payload end.
    pub(crate) request_id: Option<(usize, usize, usize)>,
    /// Elements of a request's or notification's params array.
    pub(crate) params_len: u64,
    /// The first of them is a map.
    pub(crate) params_map: bool,
}

/// One MessagePack header, as far as the walk cares.
#[derive(Clone, Copy, Debug)]
enum Tok {
    Nil,
    /// Bool and float: nothing to record, no payload beyond the header.
    Scalar,
    Uint(u64),
    Int(i64),
    Str(u64),
    /// Binary and ext: a payload to skip (for ext, the data after the type byte).
    Blob(u64),
    Array(u64),
    Map(u64),
}

/// Result of reading a header at the start of a slice.
enum Header {
    /// Header length in bytes, and what it declares.
    Ok(usize, Tok),
    /// The header is this many bytes long and the slice is shorter.
    Need(usize),
}

/// Reads the header at the start of `b` (which is not empty).
#[inline(always)]
fn header(b: &[u8]) -> Result<Header, &'static str> {
    let lead = b[0];
    // Fixed-size forms first: they carry the common fields (fixstr keys, fixint values).
    let tok = match lead {
        0x00..=0x7f => return Ok(Header::Ok(1, Tok::Uint(u64::from(lead)))),
        0x80..=0x8f => return Ok(Header::Ok(1, Tok::Map(u64::from(lead & 0x0f)))),
        0x90..=0x9f => return Ok(Header::Ok(1, Tok::Array(u64::from(lead & 0x0f)))),
        0xa0..=0xbf => return Ok(Header::Ok(1, Tok::Str(u64::from(lead & 0x1f)))),
        0xc0 => return Ok(Header::Ok(1, Tok::Nil)),
        0xc1 => return Err("reserved type byte 0xc1"),
        0xc2 | 0xc3 => return Ok(Header::Ok(1, Tok::Scalar)),
        0xe0..=0xff => return Ok(Header::Ok(1, Tok::Int(i64::from(lead as i8)))),
        _ => lead,
    };
    let len = match tok {
        0xc4 | 0xcc | 0xd0 | 0xd9 | 0xd4..=0xd8 => 2, // fixext: lead byte, type byte
        0xc5 | 0xcd | 0xd1 | 0xda | 0xdc | 0xde | 0xc7 => 3,
        0xc8 => 4,
        0xc6 | 0xca | 0xce | 0xd2 | 0xdb | 0xdd | 0xdf => 5,
        0xc9 => 6,
        _ => 9, // 0xcb, 0xcf, 0xd3
    };
    if b.len() < len {
        return Ok(Header::Need(len));
    }
    // Big-endian unsigned of 1, 2, 4 or 8 bytes after the lead byte (the header is buffered).
    let be = |n: usize| match n {
        1 => u64::from(b[1]),
        2 => u64::from(u16::from_be_bytes([b[1], b[2]])),
        4 => u64::from(u32::from_be_bytes([b[1], b[2], b[3], b[4]])),
        _ => u64::from_be_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]),
    };
    let t = match tok {
        0xc4..=0xc6 => Tok::Blob(be(len - 1)),
        0xc7..=0xc9 => Tok::Blob(be(len - 2)), // length, then the type byte
        0xca | 0xcb => Tok::Scalar,
        0xcc..=0xcf => Tok::Uint(be(len - 1)),
        0xd0 => Tok::Int(i64::from(b[1] as i8)),
        0xd1 => Tok::Int(i64::from(i16::from_be_bytes([b[1], b[2]]))),
        0xd2 => Tok::Int(i64::from(i32::from_be_bytes([b[1], b[2], b[3], b[4]]))),
        0xd3 => Tok::Int(be(8) as i64),
        0xd4 => Tok::Blob(1),
        0xd5 => Tok::Blob(2),
        0xd6 => Tok::Blob(4),
        0xd7 => Tok::Blob(8),
        0xd8 => Tok::Blob(16),
        0xd9..=0xdb => Tok::Str(be(len - 1)),
        0xdc | 0xdd => Tok::Array(be(len - 1)),
        _ => Tok::Map(be(len - 1)), // 0xde, 0xdf
    };
    Ok(Header::Ok(len, t))
}

/// What an open container means to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// The top-level RPC array.
    Root,
    /// A request's or notification's params array.
    Params,
    /// A map whose `"RequestID"` key the proxy wants (UpdateRequest params[0], response result).
    IdMap,
    /// Anything else: only counted.
    Other,
}

/// An open array or map. `len` counts items (a map of n pairs has 2n).
#[derive(Clone, Copy, Debug)]
struct Level {
    ctx: Ctx,
    len: u64,
    done: u64,
}

const REQUEST_ID: &[u8] = b"RequestID";
const UPDATE_REQUEST: &[u8] = b"RPC.UpdateRequest";

/// Resumable walker over the frame at the start of a buffer.
#[derive(Debug)]
pub(crate) struct Scanner {
    /// Next header to read, from the frame start; past the buffer while a payload is pending.
    pos: usize,
    /// Set once the top-level value is closed: the frame length.
    end: Option<usize>,
    /// Buffer length needed before the walk can move on (a hint for reserving).
    need: usize,
    stack: Vec<Level>,
    view: View,
    /// Top-level array length (3 or 4).
    root_len: u64,
    /// The request's method is `RPC.UpdateRequest`.
    update: bool,
    /// Payload start of the previous key if it may be `"RequestID"` (its bytes are checked when its
    /// value's header arrives, by then they are buffered).
    id_key: Option<usize>,
}

impl Scanner {
    /// A scanner whose stack is sized for `limits` (allocated once, reused frame after frame).
    pub(crate) fn new(limits: &Limits) -> Self {
        Scanner {
            pos: 0,
            end: None,
            need: 1,
            stack: Vec::with_capacity(limits.max_depth.min(64)),
            view: View::default(),
            root_len: 0,
            update: false,
            id_key: None,
        }
    }

    /// Forgets the current frame (after it was split off, or after an error).
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
        self.end = None;
        self.need = 1;
        self.stack.clear();
        self.view = View::default();
        self.root_len = 0;
        self.update = false;
        self.id_key = None;
    }

    /// The view of the frame just completed; resets for the next frame.
    pub(crate) fn take_view(&mut self) -> View {
        let view = self.view;
        self.reset();
        view
    }

    /// Buffer length the walk needs before it can make progress.
    pub(crate) fn need(&self) -> usize {
        self.need
    }

    /// Continues walking the frame at the start of `buf` (which holds every byte seen by earlier
    /// calls, unchanged). `Ok(Some(len))` once the whole frame of `len` bytes is in `buf`.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, CodecError> {
        loop {
            if let Some(end) = self.end {
                if end <= buf.len() {
                    return Ok(Some(end));
                }
                self.need = end;
                return Ok(None);
            }
            let pos = self.pos;
            let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) else {
                self.need = pos + 1;
                return Ok(None);
            };
            let (hlen, tok) = match header(rest) {
                Ok(Header::Ok(hlen, tok)) => (hlen, tok),
                Ok(Header::Need(hlen)) => {
                    self.need = pos + hlen;
                    return Ok(None);
                }
                Err(reason) => {
                    return Err(CodecError::InvalidMessagePack {
                        offset: pos,
                        reason,
                    });
                }
            };
            let body = pos + hlen;
            let declared = match tok {
                Tok::Str(n) | Tok::Blob(n) | Tok::Array(n) => n,
                Tok::Map(n) => n.saturating_mul(2),
                _ => 0,
            };
            // Every array item and map key/value takes at least one byte.
            let needed = (body as u64).saturating_add(declared);
            if needed > limits.max_frame_bytes as u64 {
                return Err(CodecError::FrameTooLarge {
                    needed,
                    max: limits.max_frame_bytes,
                });
            }
            let ctx = self.classify(buf, pos, body, tok)?;
            match tok {
                Tok::Array(_) | Tok::Map(_) => {
                    if self.stack.len() >= limits.max_depth {
                        return Err(CodecError::TooDeep {
                            max: limits.max_depth,
                        });
                    }
                    self.pos = body;
                    if declared == 0 {
                        self.finish_value();
                    } else {
                        self.stack.push(Level {
                            ctx,
                            len: declared,
                            done: 0,
                        });
                    }
                }
                Tok::Str(n) | Tok::Blob(n) => {
                    // Fits in usize: bounded by max_frame_bytes above.
                    self.pos = body + n as usize;
                    self.finish_value();
                }
                _ => {
                    self.pos = body;
                    self.finish_value();
                }
            }
        }
    }

    /// Records what the value at `pos` means for routing, checks the RPC shape, and returns the
    /// context for it if it opens a container.
    #[inline(always)]
    fn classify(
        &mut self,
        buf: &[u8],
        pos: usize,
        body: usize,
        tok: Tok,
    ) -> Result<Ctx, CodecError> {
        let Some(&Level { ctx, done, .. }) = self.stack.last() else {
            return match tok {
                Tok::Array(n @ (3 | 4)) => {
                    self.root_len = n;
                    Ok(Ctx::Root)
                }
                _ => Err(not_rpc("top level is not an array of 3 or 4 elements")),
            };
        };
        match ctx {
            Ctx::Root => self.root_item(buf, done, pos, body, tok),
            Ctx::Params if done == 0 => {
                self.view.params_map = matches!(tok, Tok::Map(_));
                Ok(if self.update && self.view.params_map {
                    Ctx::IdMap
                } else {
                    Ctx::Other
                })
            }
            Ctx::IdMap if done % 2 == 0 => {
                self.id_key = match tok {
                    Tok::Str(9) => Some(body),
                    _ => None,
                };
                Ok(Ctx::Other)
            }
            Ctx::IdMap => {
                if let (Some(key), Tok::Str(n), None) =
                    (self.id_key.take(), tok, self.view.request_id)
                    && buf.get(key..key + REQUEST_ID.len()) == Some(REQUEST_ID)
                {
                    self.view.request_id = Some((pos, body, body + n as usize));
                }
                Ok(Ctx::Other)
            }
            _ => Ok(Ctx::Other),
        }
    }

    /// An element of the top-level array.
    fn root_item(
        &mut self,
        buf: &[u8],
        index: u64,
        pos: usize,
        body: usize,
        tok: Tok,
    ) -> Result<Ctx, CodecError> {
        let kind = self.view.kind;
        match (index, kind) {
            (0, _) => {
                self.view.kind = match (unsigned(tok), self.root_len) {
                    (Some(0), 4) => FrameKind::Request,
                    (Some(1), 4) => FrameKind::Response,
                    (Some(2), 3) => FrameKind::Notification,
                    _ => {
                        return Err(not_rpc(
                            "type is not 0 or 1 in an array of 4, nor 2 in an array of 3",
                        ));
                    }
                };
            }
            (1, FrameKind::Request | FrameKind::Response) => {
                self.view.msgid =
                    unsigned(tok).ok_or(not_rpc("msgid is not an unsigned integer"))?;
                self.view.msgid_at = (pos, body);
            }
            (2, FrameKind::Request) | (1, FrameKind::Notification) => match tok {
                Tok::Str(n) => self.view.method = Some((body, body + n as usize)),
                _ => return Err(not_rpc("method is not a string")),
            },
            (3, FrameKind::Request) | (2, FrameKind::Notification) => {
                let Tok::Array(n) = tok else {
                    return Err(not_rpc("params is not an array"));
                };
                self.view.params_len = n;
                if kind == FrameKind::Request {
                    // The method string ends before this header, so it is buffered.
                    self.update =
                        self.view.method.and_then(|(s, e)| buf.get(s..e)) == Some(UPDATE_REQUEST);
                }
                return Ok(Ctx::Params);
            }
            (2, _) => self.view.error = !matches!(tok, Tok::Nil),
            _ => {
                // A response's result: a map may carry a RequestID.
                if let Tok::Map(_) = tok {
                    return Ok(Ctx::IdMap);
                }
            }
        }
        Ok(Ctx::Other)
    }

    /// A value ended at `self.pos`: close every container it completes.
    #[inline(always)]
    fn finish_value(&mut self) {
        while let Some(top) = self.stack.last_mut() {
            top.done += 1;
            if top.done < top.len {
                return;
            }
            self.stack.pop();
        }
        self.end = Some(self.pos);
    }
}

/// A non-negative integer of any encoding.
fn unsigned(tok: Tok) -> Option<u64> {
    match tok {
        Tok::Uint(v) => Some(v),
        Tok::Int(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

fn not_rpc(reason: &'static str) -> CodecError {
    CodecError::NotRpc { reason }
}
