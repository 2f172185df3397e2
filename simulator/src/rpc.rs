//! The MessagePack-RPC wire format as the modules and the agent speak it (see
//! `docs/protocol.md`).
//!
//! Deliberately an implementation independent of the proxy's codec: the simulator and the
//! emulator are what the proxy is tested against, so they must not share its bugs. Frames are
//! found by walking the MessagePack structure ([`frame_len`]); messages are typed with rmp-serde.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `RPC.ModuleInit`.
pub const MODULE_INIT: &str = "RPC.ModuleInit";
/// `RPC.PreRequest`.
pub const PRE_REQUEST: &str = "RPC.PreRequest";
/// `RPC.UpdateRequest`.
pub const UPDATE_REQUEST: &str = "RPC.UpdateRequest";
/// `RPC.PostRequest`.
pub const POST_REQUEST: &str = "RPC.PostRequest";

/// Largest frame accepted: 16 MiB. A PreRequest carries up to 1 MB of headers (Go's
/// `net/http` default) plus the body the module is configured to pass; the real agent sets no
/// lower bound, and a simulator that did would fail calls the proxy must forward.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Why bytes are not a valid frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame announces or reaches more bytes than allowed.
    #[error("frame larger than {max} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A byte that MessagePack never uses (0xc1).
    #[error("invalid MessagePack marker 0x{0:02x}")]
    BadMarker(u8),
    /// Valid MessagePack that is not an RPC request, response or notification.
    #[error("not a MessagePack-RPC frame: {0}")]
    NotRpc(String),
}

/// Length of the first complete MessagePack value in `buf`; `Ok(None)` if more bytes are needed.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let mut pos = 0usize;
    let mut pending: u64 = 1; // values still to walk
    while pending > 0 {
        if pos > max || pending > (max as u64) {
            return Err(FrameError::TooLarge { max });
        }
        let Some(&m) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        pending -= 1;
        let be = |pos: usize, n: usize| -> Option<u64> {
            let b = buf.get(pos..pos + n)?;
            Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        };
        // (bytes to skip after the marker, of which length-prefix bytes, nested values)
        let (skip, children): (u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (0, u64::from(m & 0x0f)),
            0xa0..=0xbf => (u64::from(m & 0x1f), 0),
            0xc1 => return Err(FrameError::BadMarker(m)),
            0xc4..=0xc6 | 0xd9..=0xdb => {
                let n = match m {
                    0xc4 | 0xd9 => 1,
                    0xc5 | 0xda => 2,
                    _ => 4,
                };
                let Some(len) = be(pos, n) else {
                    return Ok(None);
                };
                (n as u64 + len, 0)
            }
            0xc7..=0xc9 => {
                let n = 1usize << (m - 0xc7); // 1, 2, 4
                let Some(len) = be(pos, n) else {
                    return Ok(None);
                };
                (n as u64 + 1 + len, 0)
            }
            0xca | 0xd2 | 0xce => (4, 0),
            0xcb | 0xd3 | 0xcf => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4..=0xd8 => (1 + (1u64 << (m - 0xd4)), 0),
            0xdc | 0xde => {
                let Some(n) = be(pos, 2) else { return Ok(None) };
                (2, if m == 0xde { 2 * n } else { n })
            }
            0xdd | 0xdf => {
                let Some(n) = be(pos, 4) else { return Ok(None) };
                (4, if m == 0xdf { 2 * n } else { n })
            }
        };
        if skip > max as u64 {
            return Err(FrameError::TooLarge { max });
        }
        pos += skip as usize;
        pending += children;
    }
    if pos > max {
        return Err(FrameError::TooLarge { max });
    }
    if pos > buf.len() {
        return Ok(None);
    }
    Ok(Some(pos))
}

/// The three frame shapes, with the parts common to all methods.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope<'a> {
    /// `[0, msgid, method, params]`; `params` is the raw encoded params array.
    Request {
        /// Message id chosen by the caller.
        msgid: u64,
        /// Method name.
        method: &'a str,
        /// The encoded params array.
        params: &'a [u8],
    },
    /// `[1, msgid, error, result]`; `result` is the raw encoded result.
    Response {
        /// Message id of the request answered.
        msgid: u64,
        /// Error text, `None` on success.
        error: Option<&'a str>,
        /// The encoded result.
        result: &'a [u8],
    },
    /// `[2, method, params]`.
    Notification {
        /// Method name.
        method: &'a str,
    },
}

fn not_rpc(e: impl std::fmt::Display) -> FrameError {
    FrameError::NotRpc(e.to_string())
}

/// Splits one complete frame into its envelope.
pub fn envelope(frame: &[u8]) -> Result<Envelope<'_>, FrameError> {
    let mut rd = frame;
    let n = rmp::decode::read_array_len(&mut rd).map_err(not_rpc)?;
    let kind: u8 = rmp::decode::read_int(&mut rd).map_err(not_rpc)?;
    match (kind, n) {
        (0, 4) => {
            let msgid: u64 = rmp::decode::read_int(&mut rd).map_err(not_rpc)?;
            let (method, rest) = rmp::decode::read_str_from_slice(rd).map_err(not_rpc)?;
            Ok(Envelope::Request {
                msgid,
                method,
                params: rest,
            })
        }
        (1, 4) => {
            let msgid: u64 = rmp::decode::read_int(&mut rd).map_err(not_rpc)?;
            let (error, rest) = if rd.first() == Some(&0xc0) {
                (None, &rd[1..])
            } else {
                let (e, rest) = rmp::decode::read_str_from_slice(rd).map_err(not_rpc)?;
                (Some(e), rest)
            };
            Ok(Envelope::Response {
                msgid,
                error,
                result: rest,
            })
        }
        (2, 3) => {
            let (method, _) = rmp::decode::read_str_from_slice(rd).map_err(not_rpc)?;
            Ok(Envelope::Notification { method })
        }
        _ => Err(FrameError::NotRpc(format!("type {kind} with {n} elements"))),
    }
}

/// Decodes a request's params array (one map) into `T`.
pub fn decode_params<T: DeserializeOwned>(params: &[u8]) -> Result<T, FrameError> {
    let mut v: Vec<T> = rmp_serde::from_slice(params).map_err(not_rpc)?;
    if v.len() != 1 {
        return Err(FrameError::NotRpc(format!(
            "{} params, expected 1",
            v.len()
        )));
    }
    Ok(v.remove(0))
}

/// `[0, msgid, method, [params]]` with `params` as a map, in one buffer.
pub fn encode_request<T: Serialize>(msgid: u64, method: &str, params: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&(0u8, msgid, method, [params])).expect("serialisable")
}

/// `[1, msgid, error, result]` in one buffer.
pub fn encode_response<T: Serialize>(msgid: u64, error: Option<&str>, result: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&(1u8, msgid, error, result)).expect("serialisable")
}

/// A name/value pair as the modules encode headers: a 2-element array.
pub type Header = (String, String);

/// Params of `RPC.PreRequest`, `RPC.PostRequest` and `RPC.ModuleInit` (Go field names).
#[allow(missing_docs, non_snake_case)]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RPCMsgIn {
    pub AccessKeyID: String,
    pub ModuleVersion: String,
    pub ServerVersion: String,
    pub ServerFlavor: String,
    pub ServerName: String,
    pub Timestamp: i64,
    pub NowMillis: i64,
    pub RemoteAddr: String,
    pub Method: String,
    pub Scheme: String,
    pub URI: String,
    pub Protocol: String,
    pub TLSProtocol: String,
    pub TLSCipher: String,
    pub WAFResponse: i32,
    pub ResponseCode: i32,
    pub ResponseMillis: i64,
    pub ResponseSize: i64,
    pub HeadersIn: Vec<Header>,
    pub HeadersOut: Vec<Header>,
    pub PostBody: String,
}

/// Params of `RPC.UpdateRequest`.
#[allow(missing_docs, non_snake_case)]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RPCMsgIn2 {
    pub RequestID: String,
    pub ResponseCode: i32,
    pub ResponseMillis: i64,
    pub ResponseSize: i64,
    pub HeadersOut: Vec<Header>,
}

/// Result of `RPC.PreRequest` and `RPC.ModuleInit`.
#[allow(missing_docs, non_snake_case)]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RPCMsgOut {
    pub WAFResponse: i32,
    pub RequestID: String,
    pub RequestHeaders: Vec<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub RespActions: Vec<(i8, Vec<String>)>,
}

/// A decoded response's result: a map (PreRequest, ModuleInit) or an int (the others).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// An integer result.
    Int(i64),
    /// A PreRequest/ModuleInit result map.
    Out(RPCMsgOut),
    /// Nil (error responses).
    Nil(()),
}

/// Decodes a whole response frame: `(msgid, error, result)`.
pub fn decode_response(frame: &[u8]) -> Result<(u64, Option<String>, Reply), FrameError> {
    match envelope(frame)? {
        Envelope::Response {
            msgid,
            error,
            result,
        } => {
            let reply: Reply = rmp_serde::from_slice(result).map_err(not_rpc)?;
            Ok((msgid, error.map(str::to_owned), reply))
        }
        other => Err(FrameError::NotRpc(format!(
            "expected a response, got {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_finds_the_end_of_one_value_and_waits_for_more() {
        let req = encode_request(
            7,
            PRE_REQUEST,
            &RPCMsgIn {
                URI: "/x".into(),
                ..Default::default()
            },
        );
        assert_eq!(frame_len(&req, MAX_FRAME_BYTES), Ok(Some(req.len())));
        for cut in 0..req.len() {
            assert_eq!(
                frame_len(&req[..cut], MAX_FRAME_BYTES),
                Ok(None),
                "cut at {cut}"
            );
        }
        let mut two = req.clone();
        two.extend_from_slice(&req);
        assert_eq!(frame_len(&two, MAX_FRAME_BYTES), Ok(Some(req.len())));
        assert!(matches!(
            frame_len(&req, 10),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(frame_len(&[0xc1], 10), Err(FrameError::BadMarker(0xc1)));
        // array32 announcing 2^32-1 elements is rejected before the bytes arrive
        assert!(frame_len(&[0xdd, 0xff, 0xff, 0xff, 0xff], 1000).is_err());
    }

    #[test]
    fn request_and_response_round_trip() {
        let p = RPCMsgIn2 {
            RequestID: "abc".into(),
            ResponseCode: 200,
            ..Default::default()
        };
        let req = encode_request(u64::from(u32::MAX), UPDATE_REQUEST, &p);
        let Envelope::Request {
            msgid,
            method,
            params,
        } = envelope(&req).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!((msgid, method), (u64::from(u32::MAX), UPDATE_REQUEST));
        assert_eq!(decode_params::<RPCMsgIn2>(params).unwrap(), p);

        let out = RPCMsgOut {
            WAFResponse: 406,
            RequestID: "id".into(),
            ..Default::default()
        };
        let resp = encode_response(3, None, &out);
        assert_eq!(decode_response(&resp).unwrap(), (3, None, Reply::Out(out)));
        let resp = encode_response(4, Some("boom"), &());
        assert_eq!(
            decode_response(&resp).unwrap(),
            (4, Some("boom".into()), Reply::Nil(()))
        );
        let resp = encode_response(5, None, &0);
        assert_eq!(decode_response(&resp).unwrap(), (5, None, Reply::Int(0)));
    }
}
