//! Typed module ↔ agent messages (rmp-serde) for the codec's unit tests, which build frames with
//! them. Compiled for tests only: the proxy's forwarding path never deserializes a message (it
//! works on [`crate::codec::Frame`] bytes), and the public definition of the message types is the
//! loadtest's (`loadtest::rpc`), the implementation independent of this crate that the proxy's
//! integration tests, golden frames and benchmarks use.
//!
//! Field names on the wire are the Go module's struct field names (docs/protocol.md). Decoding is
//! lenient like the Go module's: unknown keys are skipped, missing keys and nil values take the
//! type's default.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Method name of the call made before the application handles a request.
pub const PRE_REQUEST: &str = "RPC.PreRequest";
/// Method name of the follow-up call for a request the agent gave a RequestID.
pub const UPDATE_REQUEST: &str = "RPC.UpdateRequest";

/// Params of `RPC.PreRequest`, `RPC.PostRequest` and `RPC.ModuleInit` (Go `RPCMsgIn`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RPCMsgIn {
    /// Site access key (deprecated, optional).
    #[serde(rename = "AccessKeyID", deserialize_with = "nil_default")]
    pub access_key_id: String,
    /// Module build version.
    #[serde(rename = "ModuleVersion", deserialize_with = "nil_default")]
    pub module_version: String,
    /// Web server identifier, e.g. `"nginx/1.25"`.
    #[serde(rename = "ServerVersion", deserialize_with = "nil_default")]
    pub server_version: String,
    /// Other web server configuration information.
    #[serde(rename = "ServerFlavor", deserialize_with = "nil_default")]
    pub server_flavor: String,
    /// Host name the request was addressed to.
    #[serde(rename = "ServerName", deserialize_with = "nil_default")]
    pub server_name: String,
    /// Request start, seconds since the Unix epoch.
    #[serde(rename = "Timestamp", deserialize_with = "nil_default")]
    pub timestamp: i64,
    /// Current time, milliseconds since the Unix epoch.
    #[serde(rename = "NowMillis", deserialize_with = "nil_default")]
    pub now_millis: i64,
    /// Client IP address.
    #[serde(rename = "RemoteAddr", deserialize_with = "nil_default")]
    pub remote_addr: String,
    /// HTTP method.
    #[serde(rename = "Method", deserialize_with = "nil_default")]
    pub method: String,
    /// `http` or `https`.
    #[serde(rename = "Scheme", deserialize_with = "nil_default")]
    pub scheme: String,
    /// Path and query.
    #[serde(rename = "URI", deserialize_with = "nil_default")]
    pub uri: String,
    /// HTTP protocol, e.g. `HTTP/1.1`.
    #[serde(rename = "Protocol", deserialize_with = "nil_default")]
    pub protocol: String,
    /// TLS version, e.g. `TLSv1.2`.
    #[serde(rename = "TLSProtocol", deserialize_with = "nil_default")]
    pub tls_protocol: String,
    /// TLS cipher suite.
    #[serde(rename = "TLSCipher", deserialize_with = "nil_default")]
    pub tls_cipher: String,
    /// The agent's earlier decision (PostRequest), optional.
    #[serde(rename = "WAFResponse", deserialize_with = "nil_default")]
    pub waf_response: i32,
    /// HTTP status sent, -1 if unknown.
    #[serde(rename = "ResponseCode", deserialize_with = "nil_default")]
    pub response_code: i32,
    /// Milliseconds the whole request took, -1 if unknown.
    #[serde(rename = "ResponseMillis", deserialize_with = "nil_default")]
    pub response_millis: i64,
    /// Response size in bytes, -1 if unknown.
    #[serde(rename = "ResponseSize", deserialize_with = "nil_default")]
    pub response_size: i64,
    /// Request headers as `[name, value]` pairs.
    #[serde(rename = "HeadersIn", deserialize_with = "nil_default")]
    pub headers_in: Vec<(String, String)>,
    /// Response headers as `[name, value]` pairs.
    #[serde(rename = "HeadersOut", deserialize_with = "nil_default")]
    pub headers_out: Vec<(String, String)>,
    /// Request body (up to the module's maximum content length), empty if none.
    #[serde(rename = "PostBody", deserialize_with = "nil_default")]
    pub post_body: String,
}

/// Params of `RPC.UpdateRequest` (Go `RPCMsgIn2`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RPCMsgIn2 {
    /// The RequestID the agent returned from PreRequest.
    #[serde(rename = "RequestID", deserialize_with = "nil_default")]
    pub request_id: String,
    /// HTTP status sent.
    #[serde(rename = "ResponseCode", deserialize_with = "nil_default")]
    pub response_code: i32,
    /// Milliseconds the whole request took.
    #[serde(rename = "ResponseMillis", deserialize_with = "nil_default")]
    pub response_millis: i64,
    /// Response size in bytes.
    #[serde(rename = "ResponseSize", deserialize_with = "nil_default")]
    pub response_size: i64,
    /// Response headers as `[name, value]` pairs.
    #[serde(rename = "HeadersOut", deserialize_with = "nil_default")]
    pub headers_out: Vec<(String, String)>,
}

/// Result of `RPC.PreRequest` and `RPC.ModuleInit` (Go `RPCMsgOut`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RPCMsgOut {
    /// Decision: 200 allow, 406 block, other codes possible.
    #[serde(rename = "WAFResponse", deserialize_with = "nil_default")]
    pub waf_response: i32,
    /// Non-empty when the agent wants an `RPC.UpdateRequest` carrying this ID.
    #[serde(rename = "RequestID", deserialize_with = "nil_default")]
    pub request_id: String,
    /// Headers to add to the request, as `[name, value]` pairs.
    #[serde(rename = "RequestHeaders", deserialize_with = "nil_default")]
    pub request_headers: Vec<(String, String)>,
    /// Response header edits; omitted from the encoding when empty, as the Go agent does.
    #[serde(
        rename = "RespActions",
        deserialize_with = "nil_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resp_actions: Vec<Action>,
}

/// A response header edit: `[code, [args…]]` on the wire (Go `Action`, a msgp tuple).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action(
    /// 1 add, 2 set, 3 set if not empty, 4 delete.
    pub i8,
    /// Header name and value(s).
    pub Vec<String>,
);

/// A frame that [`decode_request`] or [`decode_response`] could not read.
#[derive(Debug, Error)]
pub enum MessageError {
    /// Not MessagePack, or not the expected shape or types.
    #[error("cannot decode message")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A well-formed message of another kind (the first element).
    #[error("expected message type {expected}, found {found}")]
    WrongKind {
        /// 0 request, 1 response.
        expected: u8,
        /// What the frame had.
        found: u8,
    },
    /// A request whose params array is empty.
    #[error("request has no params")]
    NoParams,
}

/// Encodes `[0, msgid, method, [params]]`, with `params` (a struct) as a map keyed by field name.
pub fn encode_request<T: Serialize>(msgid: u64, method: &str, params: &T) -> Vec<u8> {
    to_vec((0u8, msgid, method, [params]))
}

/// Encodes `[1, msgid, error, result]` (`error` nil when `None`), with a struct `result` as a map.
pub fn encode_response<T: Serialize>(msgid: u64, error: Option<&str>, result: &T) -> Vec<u8> {
    to_vec((1u8, msgid, error, result))
}

fn to_vec<T: Serialize>(value: T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
    // Writing to a Vec cannot fail, and our message types always serialize.
    value
        .serialize(&mut ser)
        .expect("serializing an RPC message to a Vec");
    out
}

/// Decodes a request frame into `(msgid, method, params[0])`.
pub fn decode_request<T: DeserializeOwned>(frame: &[u8]) -> Result<(u64, String, T), MessageError> {
    let (kind, msgid, method, mut params): (u8, u64, String, Vec<T>) =
        rmp_serde::from_slice(frame)?;
    if kind != 0 {
        return Err(MessageError::WrongKind {
            expected: 0,
            found: kind,
        });
    }
    if params.is_empty() {
        return Err(MessageError::NoParams);
    }
    Ok((msgid, method, params.swap_remove(0)))
}

/// Decodes a response frame into `(msgid, error, result)`; `result` is `None` when nil.
pub fn decode_response<T: DeserializeOwned>(
    frame: &[u8],
) -> Result<(u64, Option<String>, Option<T>), MessageError> {
    let (kind, msgid, error, result): (u8, u64, Option<String>, Option<T>) =
        rmp_serde::from_slice(frame)?;
    if kind != 1 {
        return Err(MessageError::WrongKind {
            expected: 1,
            found: kind,
        });
    }
    Ok((msgid, error, result))
}

/// Nil (or a missing key, with `#[serde(default)]`) reads as the type's default, as in Go.
fn nil_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn nil_fields_read_as_defaults() {
        let bytes: Vec<u8> = [
            &[0x94, 0x00, 0x01, 0xae][..], b"RPC.PreRequest", &[0x91, 0x82],
            &[0xa9], b"HeadersIn", &[0xc0],
            &[0xa3], b"URI", &[0xc0],
        ]
        .concat();
        let (msgid, method, params) = decode_request::<RPCMsgIn>(&bytes).unwrap();
        assert_eq!((msgid, method.as_str(), params), (1, PRE_REQUEST, RPCMsgIn::default()));
    }
}
