//! A decoded frame: its bytes, untouched, plus the few fields the proxy routes on, and the two
//! byte-level edits the proxy makes (msgid and RequestID) without re-encoding anything else.

use std::fmt;

use bytes::Bytes;

use super::error::CodecError;
use super::limits::Limits;
use super::scan::{FrameKind, Scanner, View};

/// The RPC method of a request or notification, from its method string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `RPC.ModuleInit`.
    ModuleInit,
    /// `RPC.PreRequest`.
    PreRequest,
    /// `RPC.UpdateRequest`.
    UpdateRequest,
    /// `RPC.PostRequest`.
    PostRequest,
    /// Any other method name.
    Other,
}

impl Method {
    /// The method named by `name` (`Other` for names the proxy does not know).
    pub fn from_name(name: &[u8]) -> Method {
        match name {
            b"RPC.ModuleInit" => Method::ModuleInit,
            b"RPC.PreRequest" => Method::PreRequest,
            b"RPC.UpdateRequest" => Method::UpdateRequest,
            b"RPC.PostRequest" => Method::PostRequest,
            _ => Method::Other,
        }
    }
}

/// One complete MessagePack-RPC frame: its bytes (a cheap-to-clone [`Bytes`]) plus a view computed
/// while the decoder looked for its end.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    view: View,
}

impl Frame {
    pub(crate) fn from_parts(bytes: Bytes, view: View) -> Frame {
        Frame { bytes, view }
    }

    /// Checks that `bytes` is exactly one MessagePack-RPC frame within `limits` and builds its view.
    /// Truncated input and trailing bytes are [`CodecError::InvalidMessagePack`].
    pub fn parse(bytes: Bytes, limits: &Limits) -> Result<Frame, CodecError> {
        let mut scanner = Scanner::new(limits);
        match scanner.scan(&bytes, limits)? {
            Some(end) if end == bytes.len() => Ok(Frame {
                view: scanner.take_view(),
                bytes,
            }),
            Some(end) => Err(CodecError::InvalidMessagePack {
                offset: end,
                reason: "trailing bytes after the frame",
            }),
            None => Err(CodecError::InvalidMessagePack {
                offset: bytes.len(),
                reason: "truncated frame",
            }),
        }
    }

    /// Request, response or notification.
    pub fn kind(&self) -> FrameKind {
        self.view.kind
    }

    /// The msgid of a request or response; `None` for a notification.
    pub fn msgid(&self) -> Option<u64> {
        (self.view.kind != FrameKind::Notification).then_some(self.view.msgid)
    }

    /// The method of a request or notification; `None` for a response.
    pub fn method(&self) -> Option<Method> {
        self.method_name().map(Method::from_name)
    }

    /// The raw method string of a request or notification; `None` for a response.
    pub fn method_name(&self) -> Option<&[u8]> {
        self.view.method.map(|(s, e)| &self.bytes[s..e])
    }

    /// The `RequestID` string: for a request, the one in an `RPC.UpdateRequest`'s `params[0]` map; for
    /// a response, the one in its result map (a PreRequest or ModuleInit answer). `None` if absent
    /// or not a string. An empty string (the agent wants no update) is `Some(b"")`.
    pub fn request_id(&self) -> Option<&[u8]> {
        self.view.request_id.map(|(_, s, e)| &self.bytes[s..e])
    }

    /// The most bytes a `RequestID` may have and keep the string header class its sender used:
    /// 31 for a `fixstr`, 255 for a `str8`, 65,535 for a `str16`, `u32::MAX` for a `str32`
    /// ([`Frame::rewrite`] keeps that class when the new ID fits it). `None` without one.
    pub fn request_id_capacity(&self) -> Option<usize> {
        self.view
            .request_id
            .map(|(header, _, _)| STR_CAPACITY[str_class(self.bytes[header])])
    }

    /// What is wrong with this frame as a module's call, if anything. The modules send only
    /// requests `[0, msgid, method, [map]]` naming one of the four methods; anything else is
    /// answered by the proxy and never reaches a shared agent connection, where an agent that
    /// drops the connection over one bad frame would fail every call multiplexed on it. String
    /// contents are never judged: modules pass raw request bytes.
    pub fn call_problem(&self) -> Option<&'static str> {
        match self.view.kind {
            FrameKind::Request => {}
            FrameKind::Notification => return Some("notifications are not accepted"),
            FrameKind::Response => return Some("a response is not a call"),
        }
        if self.view.params_len != 1 || !self.view.params_map {
            return Some("params must be an array of one map");
        }
        if self.method() == Some(Method::Other) {
            return Some("unknown method");
        }
        None
    }

    /// A response whose error element is not nil.
    pub fn is_error_response(&self) -> bool {
        self.view.kind == FrameKind::Response && self.view.error
    }

    /// The frame's bytes, exactly as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The frame's bytes, exactly as received.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// A new frame with the msgid and/or the RequestID string replaced and every other byte copied
    /// verbatim. The msgid is written in its smallest unsigned encoding, the RequestID with the
    /// string header class its sender used, or the smallest larger one when it does not fit
    /// (modules whose decoder lacks `str8` get no `str8` where the agent sent none; see
    /// [`Frame::request_id_capacity`]). `(None, None)` returns a cheap clone.
    ///
    /// Errors with [`CodecError::NotRewritable`] if asked to replace a msgid on a notification or a
    /// RequestID on a frame that has none (see [`Frame::request_id`]).
    pub fn rewrite(
        &self,
        msgid: Option<u64>,
        request_id: Option<&[u8]>,
    ) -> Result<Frame, CodecError> {
        if msgid.is_some() && self.view.kind == FrameKind::Notification {
            return Err(CodecError::NotRewritable {
                reason: "a notification has no msgid",
            });
        }
        if request_id.is_some() && self.view.request_id.is_none() {
            return Err(CodecError::NotRewritable {
                reason: "the frame has no RequestID",
            });
        }
        if request_id.is_some_and(|id| u32::try_from(id.len()).is_err()) {
            return Err(CodecError::NotRewritable {
                reason: "RequestID longer than 4 GiB",
            });
        }
        if msgid.is_none() && request_id.is_none() {
            return Ok(self.clone());
        }
        let src = &self.bytes[..];
        let mut out = Vec::with_capacity(src.len() + 9 + request_id.map_or(0, |id| id.len() + 5));
        let mut view = self.view;
        // Both edits keep their order in the frame: msgid, then method, then RequestID.
        let mut copied = 0;
        if let Some(id) = msgid {
            let (start, end) = self.view.msgid_at;
            out.extend_from_slice(&src[..start]);
            write_uint(&mut out, id);
            view.msgid = id;
            view.msgid_at = (start, out.len());
            copied = end;
            let shift = |at: usize| at + out.len() - end;
            view.method = view.method.map(|(s, e)| (shift(s), shift(e)));
            view.request_id = view
                .request_id
                .map(|(h, s, e)| (shift(h), shift(s), shift(e)));
        }
        if let (Some(id), Some((header, _, end))) = (request_id, self.view.request_id) {
            out.extend_from_slice(&src[copied..header]);
            let new_header = out.len();
            write_str_header_of_class(&mut out, id.len(), str_class(src[header]));
            let start = out.len();
            out.extend_from_slice(id);
            view.request_id = Some((new_header, start, out.len()));
            copied = end;
        }
        out.extend_from_slice(&src[copied..]);
        Ok(Frame {
            bytes: Bytes::from(out),
            view,
        })
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind())
            .field("msgid", &self.msgid())
            .field("method", &self.method_name().map(String::from_utf8_lossy))
            .field(
                "request_id",
                &self.request_id().map(String::from_utf8_lossy),
            )
            .field("error", &self.is_error_response())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A response frame `[1, msgid, message, nil]` in one buffer, ready for a single write: what the
/// proxy answers when it cannot get an agent's answer in time.
pub fn error_response(msgid: u64, message: &str) -> Bytes {
    let mut out = Vec::with_capacity(16 + message.len());
    out.extend_from_slice(&[0x94, 0x01]);
    write_uint(&mut out, msgid);
    // A message longer than 4 GiB is cut: it is only ever a short diagnostic.
    let text = &message.as_bytes()[..message.len().min(u32::MAX as usize)];
    write_str_header(&mut out, text.len());
    out.extend_from_slice(text);
    out.push(0xc0);
    Bytes::from(out)
}

/// What an agent answers an `RPC.UpdateRequest`, `[1, msgid, nil, 0]` (the Go module reads an
/// int and ignores it): the proxy's answer to one whose token names no agent.
pub fn update_response(msgid: u64) -> Bytes {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&[0x94, 0x01]);
    write_uint(&mut out, msgid);
    out.extend_from_slice(&[0xc0, 0x00]);
    Bytes::from(out)
}

/// Appends `v` in its smallest unsigned MessagePack encoding.
pub(crate) fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(0xcd);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(0xce);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// The most bytes of each string header class: `fixstr`, `str8`, `str16`, `str32`.
const STR_CAPACITY: [usize; 4] = [31, 255, 65_535, u32::MAX as usize];

/// The class (index into [`STR_CAPACITY`]) of a string header's first byte.
fn str_class(header: u8) -> usize {
    match header {
        0xd9 => 1,
        0xda => 2,
        0xdb => 3,
        _ => 0,
    }
}

/// Appends a string header for `len` bytes of class `class` or, if `len` does not fit it, of
/// the smallest class that fits.
fn write_str_header_of_class(out: &mut Vec<u8>, len: usize, class: usize) {
    match class {
        1 if len <= 255 => out.extend_from_slice(&[0xd9, len as u8]),
        2 if len <= 65_535 => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        3 => {
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        _ => write_str_header(out, len),
    }
}

/// Appends the smallest string header for `len` bytes (`len` at most `u32::MAX`).
pub(crate) fn write_str_header(out: &mut Vec<u8>, len: usize) {
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(n) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, n]);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}
