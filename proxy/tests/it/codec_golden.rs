//! Golden frames: bytes written by hand from docs/protocol.md and the modules' encoders (Go msgp
//! map-encoded structs with uint32 msgids and signed ints, Node msgpack5 with the smallest unsigned
//! widths and msgid 1, Python umsgpack with random 31-bit msgids), never produced by this crate's
//! encoder or rmp. Each must decode to the right view and, read by the simulator's independent
//! decoder, to the right typed message; rewrite must produce the exact bytes a hand-edit would.
//! Byte tables keep one MessagePack item (header, payload) per line pair, so rustfmt is told to
//! leave them alone.

use agent_pool::AffinityToken;
use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use sigsci_proxy::affinity;
use sigsci_proxy::codec::{Frame, FrameCodec, FrameKind, Limits, Method, error_response};
use simulator::rpc::{self, Envelope, RPCMsgIn, RPCMsgIn2, RPCMsgOut, Reply};
use tokio_util::codec::Decoder;

const UUID: &[u8; 36] = b"7f0c6b2e-3d1a-4c55-9b8e-2a6f1d0c9e42";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `(msgid, method, params[0])` of a request, read by the simulator's decoder (not the proxy's).
fn decode_request<T: DeserializeOwned>(frame: &[u8]) -> (u64, String, T) {
    match rpc::envelope(frame).unwrap() {
        Envelope::Request {
            msgid,
            method,
            params,
        } => (
            msgid,
            method.to_owned(),
            rpc::decode_params(params).unwrap(),
        ),
        other => panic!("not a request: {other:?}"),
    }
}

/// `(msgid, error, result map)` of a response, read by the simulator's decoder.
fn decode_response(frame: &[u8]) -> (u64, Option<String>, Option<RPCMsgOut>) {
    let (msgid, error, reply) = rpc::decode_response(frame).unwrap();
    let result = match reply {
        Reply::Out(out) => Some(out),
        Reply::Nil(()) => None,
        Reply::Int(n) => panic!("an int result {n}, expected a map or nil"),
    };
    (msgid, error, result)
}

/// Decodes `bytes` as a stream (all at once) and checks it is exactly one frame.
fn one_frame(bytes: &[u8]) -> Frame {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(bytes);
    let frame = codec.decode(&mut buf).expect("valid").expect("complete");
    assert!(buf.is_empty(), "frame ended {} bytes early", buf.len());
    assert_eq!(frame.as_bytes(), bytes);
    assert_eq!(
        Frame::parse(Bytes::copy_from_slice(bytes), &Limits::default()).unwrap(),
        frame
    );
    frame
}

/// The Go module's `RPCMsgIn` (all 21 fields, in struct order, map16) with the response fields given.
#[rustfmt::skip]
fn go_msg_in(waf: &[u8], code: &[u8], millis: &[u8], size: &[u8], body: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x91, 0xde, 0x00, 0x15],
        &[0xab], b"AccessKeyID", &[0xa0],
        &[0xad], b"ModuleVersion", &[0xa6], b"1.14.0",
        &[0xad], b"ServerVersion", &[0xa6], b"go1.22",
        &[0xac], b"ServerFlavor", &[0xa0],
        &[0xaa], b"ServerName", &[0xab], b"example.com",
        &[0xa9], b"Timestamp", &[0xd2, 0x66, 0x5f, 0x4a, 0x00],
        &[0xa9], b"NowMillis", &[0xd3, 0x00, 0x00, 0x01, 0x8f, 0xe3, 0x8a, 0x1c, 0x00],
        &[0xaa], b"RemoteAddr", &[0xa8], b"10.0.0.1",
        &[0xa6], b"Method", &[0xa3], b"GET",
        &[0xa6], b"Scheme", &[0xa4], b"http",
        &[0xa3], b"URI", &[0xab], b"/search?q=1",
        &[0xa8], b"Protocol", &[0xa8], b"HTTP/1.1",
        &[0xab], b"TLSProtocol", &[0xa0],
        &[0xa9], b"TLSCipher", &[0xa0],
        &[0xab], b"WAFResponse", waf,
        &[0xac], b"ResponseCode", code,
        &[0xae], b"ResponseMillis", millis,
        &[0xac], b"ResponseSize", size,
        &[0xa9], b"HeadersIn", &[0x92],
        &[0x92, 0xa4], b"Host", &[0xab], b"example.com",
        &[0x92, 0xaa], b"User-Agent", &[0xa4], b"curl",
        &[0xaa], b"HeadersOut", &[0x90],
        &[0xa8], b"PostBody", body,
    ])
}

fn go_expected_in() -> RPCMsgIn {
    RPCMsgIn {
        ModuleVersion: "1.14.0".into(),
        ServerVersion: "go1.22".into(),
        ServerName: "example.com".into(),
        Timestamp: 0x665f_4a00,
        NowMillis: 0x018f_e38a_1c00,
        RemoteAddr: "10.0.0.1".into(),
        Method: "GET".into(),
        Scheme: "http".into(),
        URI: "/search?q=1".into(),
        Protocol: "HTTP/1.1".into(),
        ResponseCode: -1,
        ResponseMillis: -1,
        ResponseSize: -1,
        HeadersIn: vec![
            ("Host".into(), "example.com".into()),
            ("User-Agent".into(), "curl".into()),
        ],
        ..Default::default()
    }
}

#[test]
#[rustfmt::skip]
fn go_pre_request() {
    let bytes = cat(&[
        &[0x94, 0x00, 0xce, 0x00, 0x00, 0x00, 0x07, 0xae],
        b"RPC.PreRequest",
        &go_msg_in(&[0x00], &[0xff], &[0xff], &[0xff], &[0xa0]),
    ]);
    let frame = one_frame(&bytes);
    assert_eq!(frame.kind(), FrameKind::Request);
    assert_eq!(frame.msgid(), Some(7));
    assert_eq!(frame.method(), Some(Method::PreRequest));
    assert_eq!(frame.request_id(), None);
    let (msgid, method, params) = decode_request::<RPCMsgIn>(&bytes);
    assert_eq!((msgid, method.as_str()), (7, rpc::PRE_REQUEST));
    assert_eq!(params, go_expected_in());
}

#[test]
#[rustfmt::skip]
fn go_post_request_and_module_init() {
    // int16 200, int16 500, int16 1200, int32 1 MiB: msgp writes positive ints with signed widths.
    let post = cat(&[
        &[0x94, 0x00, 0xce, 0xff, 0xff, 0xff, 0xff, 0xaf],
        b"RPC.PostRequest",
        &go_msg_in(&[0xd1, 0x00, 0xc8], &[0xd1, 0x01, 0xf4], &[0xd1, 0x04, 0xb0], &[0xd2, 0x00, 0x10, 0x00, 0x00], &[0xa0]),
    ]);
    let frame = one_frame(&post);
    assert_eq!((frame.msgid(), frame.method()), (Some(u64::from(u32::MAX)), Some(Method::PostRequest)));
    let (_, _, params) = decode_request::<RPCMsgIn>(&post);
    let expected = RPCMsgIn {
        WAFResponse: 200,
        ResponseCode: 500,
        ResponseMillis: 1200,
        ResponseSize: 1 << 20,
        ..go_expected_in()
    };
    assert_eq!(params, expected);

    let init = cat(&[
        &[0x94, 0x00, 0xce, 0x00, 0x00, 0x00, 0x00, 0xae],
        b"RPC.ModuleInit",
        &go_msg_in(&[0x00], &[0x00], &[0x00], &[0x00], &[0xa0]),
    ]);
    let frame = one_frame(&init);
    assert_eq!((frame.msgid(), frame.method()), (Some(0), Some(Method::ModuleInit)));
    assert_eq!(decode_request::<RPCMsgIn>(&init).1, rpc::MODULE_INIT);
}

#[rustfmt::skip]
fn go_update_request() -> Vec<u8> {
    cat(&[
        &[0x94, 0x00, 0xce, 0x00, 0x00, 0x00, 0x08, 0xb1],
        b"RPC.UpdateRequest",
        &[0x91, 0x85],
        &[0xa9], b"RequestID", &[0xd9, 0x24], UUID,
        &[0xac], b"ResponseCode", &[0xd1, 0x00, 0xc8],
        &[0xae], b"ResponseMillis", &[0x05],
        &[0xac], b"ResponseSize", &[0xd1, 0x04, 0x00],
        &[0xaa], b"HeadersOut", &[0x91, 0x92, 0xac], b"Content-Type", &[0xa9], b"text/html",
    ])
}

#[test]
#[rustfmt::skip]
fn go_update_request_view_and_rewrite() {
    let bytes = go_update_request();
    let frame = one_frame(&bytes);
    assert_eq!((frame.msgid(), frame.method()), (Some(8), Some(Method::UpdateRequest)));
    assert_eq!(frame.request_id(), Some(&UUID[..]));
    let (_, _, params) = decode_request::<RPCMsgIn2>(&bytes);
    assert_eq!(
        params,
        RPCMsgIn2 {
            RequestID: String::from_utf8(UUID.to_vec()).unwrap(),
            ResponseCode: 200,
            ResponseMillis: 5,
            ResponseSize: 1024,
            HeadersOut: vec![("Content-Type".into(), "text/html".into())],
        }
    );
    // The proxy strips its affinity token: a 36-byte str8 ID becomes, e.g., a 4-byte one, still
    // in the str8 class its sender used.
    let new = frame.rewrite(Some(300), Some(b"abcd")).unwrap();
    let after_uuid = bytes.windows(36).position(|w| w == UUID).unwrap() + 36;
    let expected = cat(&[
        &[0x94, 0x00, 0xcd, 0x01, 0x2c, 0xb1],
        b"RPC.UpdateRequest",
        &[0x91, 0x85],
        &[0xa9], b"RequestID", &[0xd9, 0x04], b"abcd",
        &bytes[after_uuid..],
    ]);
    assert_eq!(new.as_bytes(), &expected[..]);
    assert_eq!(one_frame(&expected), new);
}

#[rustfmt::skip]
fn go_pre_response(request_id: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x94, 0x01, 0xce, 0x00, 0x00, 0x00, 0x07, 0xc0, 0x83],
        &[0xab], b"WAFResponse", &[0xd1, 0x01, 0x96],
        &[0xa9], b"RequestID", request_id,
        &[0xae], b"RequestHeaders", &[0x91, 0x92, 0xad], b"X-SigSci-Tags", &[0xa4], b"SQLI",
    ])
}

#[test]
#[rustfmt::skip]
fn go_pre_response_with_and_without_request_id() {
    let with = go_pre_response(&cat(&[&[0xd9, 0x24], UUID]));
    let frame = one_frame(&with);
    assert_eq!(frame.kind(), FrameKind::Response);
    assert_eq!((frame.msgid(), frame.method(), frame.is_error_response()), (Some(7), None, false));
    assert_eq!(frame.request_id(), Some(&UUID[..]));
    let (msgid, error, result) = decode_response(&with);
    assert_eq!((msgid, error), (7, None));
    let result = result.unwrap();
    assert_eq!((result.WAFResponse, result.RequestID.as_bytes()), (406, &UUID[..]));
    assert_eq!(result.RequestHeaders, vec![("X-SigSci-Tags".into(), "SQLI".into())]);

    let without = go_pre_response(&[0xa0]);
    let frame = one_frame(&without);
    assert_eq!(frame.request_id(), Some(&b""[..]), "an empty RequestID is still located");

    // Affinity: the proxy appends its 16-byte suffix (docs/affinity.md) to the ID and gives the
    // module back its own msgid.
    let tokened = affinity::encode_full(UUID, AffinityToken(0x0123_4567_89ab_cdef));
    assert_eq!(tokened.len(), 36 + 16);
    let new = one_frame(&with).rewrite(Some(1), Some(&tokened)).unwrap();
    let expected = cat(&[
        &[0x94, 0x01, 0x01, 0xc0, 0x83],
        &[0xab], b"WAFResponse", &[0xd1, 0x01, 0x96],
        &[0xa9], b"RequestID", &[0xd9, 52], &tokened,
        &[0xae], b"RequestHeaders", &[0x91, 0x92, 0xad], b"X-SigSci-Tags", &[0xa4], b"SQLI",
    ]);
    assert_eq!(new.as_bytes(), &expected[..]);
}

#[test]
#[rustfmt::skip]
fn node_frames() {
    // msgpack5: msgid always 1, Timestamp uint32, NowMillis uint64, ServerName omitted.
    let pre = cat(&[
        &[0x94, 0x00, 0x01, 0xae], b"RPC.PreRequest", &[0x91, 0x8e],
        &[0xad], b"ModuleVersion", &[0xa5], b"2.2.1",
        &[0xad], b"ServerVersion", &[0xa8], b"v20.20.2",
        &[0xac], b"ServerFlavor", &[0xa0],
        &[0xa9], b"Timestamp", &[0xce, 0x66, 0x5f, 0x4a, 0x00],
        &[0xa9], b"NowMillis", &[0xcf, 0x00, 0x00, 0x01, 0x8f, 0xe3, 0x8a, 0x1c, 0x00],
        &[0xaa], b"RemoteAddr", &[0xa9], b"127.0.0.1",
        &[0xa6], b"Method", &[0xa4], b"POST",
        &[0xa6], b"Scheme", &[0xa4], b"http",
        &[0xa3], b"URI", &[0xa6], b"/login",
        &[0xa8], b"Protocol", &[0xa3], b"1.1",
        &[0xab], b"TLSProtocol", &[0xa0],
        &[0xa9], b"TLSCipher", &[0xa0],
        &[0xa9], b"HeadersIn", &[0x91, 0x92, 0xac], b"Content-Type", &[0xb0], b"application/json",
        &[0xa8], b"PostBody", &[0xad], b"{\"user\":\"x\"}\n",
    ]);
    let frame = one_frame(&pre);
    assert_eq!((frame.msgid(), frame.method()), (Some(1), Some(Method::PreRequest)));
    let (_, _, params) = decode_request::<RPCMsgIn>(&pre);
    assert_eq!((params.NowMillis, params.Timestamp), (0x018f_e38a_1c00, 0x665f_4a00));
    assert_eq!((params.ServerName.as_str(), params.PostBody.as_str()), ("", "{\"user\":\"x\"}\n"));

    // UpdateRequest also carries WAFResponse; ResponseSize -1; first HeadersOut pair is the status line.
    let update = cat(&[
        &[0x94, 0x00, 0x01, 0xb1], b"RPC.UpdateRequest", &[0x91, 0x86],
        &[0xab], b"WAFResponse", &[0xcc, 0xc8],
        &[0xa9], b"RequestID", &[0xa6], b"r-1.ab",
        &[0xac], b"ResponseCode", &[0xcc, 0xc8],
        &[0xae], b"ResponseMillis", &[0x03],
        &[0xac], b"ResponseSize", &[0xff],
        &[0xaa], b"HeadersOut", &[0x91, 0x92, 0xaf], b"HTTP/1.1 200 OK", &[0xa0],
    ]);
    let frame = one_frame(&update);
    assert_eq!(frame.request_id(), Some(&b"r-1.ab"[..]));
    let (_, _, params) = decode_request::<RPCMsgIn2>(&update);
    assert_eq!((params.RequestID.as_str(), params.ResponseCode, params.ResponseSize), ("r-1.ab", 200, -1));

    // PostRequest: a map16 of 20 keys in msgpack5, trimmed here to the ones that vary in width.
    let post = cat(&[
        &[0x94, 0x00, 0x01, 0xaf], b"RPC.PostRequest", &[0x91, 0xde, 0x00, 0x04],
        &[0xac], b"ResponseCode", &[0xcd, 0x01, 0xf4],
        &[0xae], b"ResponseMillis", &[0xcd, 0x04, 0xb0],
        &[0xac], b"ResponseSize", &[0xce, 0x00, 0x10, 0x00, 0x00],
        &[0xa8], b"PostBody", &[0xa0],
    ]);
    let frame = one_frame(&post);
    assert_eq!((frame.method(), frame.request_id()), (Some(Method::PostRequest), None));
    let (_, _, params) = decode_request::<RPCMsgIn>(&post);
    assert_eq!((params.ResponseCode, params.ResponseMillis, params.ResponseSize), (500, 1200, 1 << 20));

    // A response as the Node module reads it (agent side), with RespActions.
    let response = cat(&[
        &[0x94, 0x01, 0x01, 0xc0, 0x84],
        &[0xab], b"WAFResponse", &[0xcc, 0xc8],
        &[0xa9], b"RequestID", &[0xa0],
        &[0xae], b"RequestHeaders", &[0x90],
        &[0xab], b"RespActions", &[0x91, 0x92, 0x01, 0x92, 0xa5], b"X-Foo", &[0xa3], b"bar",
    ]);
    let frame = one_frame(&response);
    assert_eq!(frame.request_id(), Some(&b""[..]));
    let result = decode_response(&response).2.unwrap();
    assert_eq!(result.RespActions, vec![(1, vec!["X-Foo".into(), "bar".into()])]);
}

#[test]
#[rustfmt::skip]
fn python_frames() {
    // umsgpack: a random 31-bit msgid (uint32 or, when small, uint16), unsigned widths, a str16 body.
    let body = vec![b'a'; 300];
    let pre = cat(&[
        &[0x94, 0x00, 0xce, 0x5a, 0x3c, 0x9e, 0x21, 0xae], b"RPC.PreRequest", &[0x91, 0x86],
        &[0xa6], b"Method", &[0xa4], b"POST",
        &[0xa3], b"URI", &[0xa1], b"/",
        &[0xa9], b"Timestamp", &[0xce, 0x66, 0x5f, 0x4a, 0x00],
        &[0xa9], b"HeadersIn", &[0x90],
        &[0xa8], b"PostBody", &[0xda, 0x01, 0x2c], &body,
        &[0xac], b"UnknownField", &[0x82, 0x01, 0xc3, 0xa1], b"k", &[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0],
    ]);
    let frame = one_frame(&pre);
    assert_eq!((frame.msgid(), frame.method()), (Some(0x5a3c_9e21), Some(Method::PreRequest)));
    let (msgid, _, params) = decode_request::<RPCMsgIn>(&pre);
    assert_eq!(msgid, 0x5a3c_9e21);
    assert_eq!((params.Method.as_str(), params.PostBody.len(), params.HeadersIn.len()), ("POST", 300, 0));

    let init = cat(&[
        &[0x94, 0x00, 0xcd, 0x9c, 0x40, 0xae], b"RPC.ModuleInit", &[0x91, 0x83],
        &[0xad], b"ModuleVersion", &[0xa5], b"3.1.0",
        &[0xad], b"ServerVersion", &[0xa6], b"3.12.1",
        &[0xa9], b"NowMillis", &[0xcf, 0x00, 0x00, 0x01, 0x8f, 0xe3, 0x8a, 0x1c, 0x00],
    ]);
    let frame = one_frame(&init);
    assert_eq!((frame.msgid(), frame.method()), (Some(40_000), Some(Method::ModuleInit)));

    let update = cat(&[
        &[0x94, 0x00, 0xce, 0x12, 0x34, 0x56, 0x78, 0xb1], b"RPC.UpdateRequest", &[0x91, 0x82],
        &[0xac], b"ResponseCode", &[0xcc, 0xc8],
        &[0xa9], b"RequestID", &[0xdb, 0x00, 0x00, 0x00, 0x03], b"xyz",
    ]);
    let frame = one_frame(&update);
    assert_eq!(frame.request_id(), Some(&b"xyz"[..]), "str32 header, key not first");
    let new = frame.rewrite(None, Some(b"xyz.t")).unwrap();
    assert_eq!(&new.as_bytes()[new.as_bytes().len() - 10..], &[0xdb, 0, 0, 0, 5, b'x', b'y', b'z', b'.', b't']);
    assert_eq!(new.msgid(), Some(0x1234_5678));

    let post = cat(&[
        &[0x94, 0x00, 0xce, 0x7f, 0xff, 0xff, 0xff, 0xaf], b"RPC.PostRequest", &[0x91, 0x81],
        &[0xac], b"ResponseCode", &[0xcd, 0x01, 0xf4],
    ]);
    assert_eq!(one_frame(&post).method(), Some(Method::PostRequest));

    let response = cat(&[
        &[0x94, 0x01, 0xce, 0x5a, 0x3c, 0x9e, 0x21, 0xc0, 0x82],
        &[0xa9], b"RequestID", &[0xa3], b"r-9",
        &[0xab], b"WAFResponse", &[0xcc, 0xc8],
    ]);
    let frame = one_frame(&response);
    assert_eq!((frame.msgid(), frame.request_id()), (Some(0x5a3c_9e21), Some(&b"r-9"[..])));
}

#[test]
#[rustfmt::skip]
fn keys_that_only_look_like_request_id_are_ignored() {
    // A 9-byte key that is not RequestID, a RequestID inside a nested map, and a non-string value.
    let bytes = cat(&[
        &[0x94, 0x01, 0x02, 0xc0, 0x83],
        &[0xa9], b"RequestIX", &[0xa1], b"a",
        &[0xa6], b"Nested", &[0x81, 0xa9], b"RequestID", &[0xa1], b"b",
        &[0xa9], b"RequestID", &[0x05],
    ]);
    assert_eq!(one_frame(&bytes).request_id(), None);
    // PreRequest params with a RequestID key: not routed on (only UpdateRequest's is).
    let pre = cat(&[&[0x94, 0x00, 0x03, 0xae], b"RPC.PreRequest", &[0x91, 0x81, 0xa9], b"RequestID", &[0xa1], b"c"]);
    assert_eq!(one_frame(&pre).request_id(), None);
}

#[test]
#[rustfmt::skip]
fn error_response_bytes() {
    let bytes = error_response(0x5a3c_9e21, "no agent available");
    let expected = cat(&[&[0x94, 0x01, 0xce, 0x5a, 0x3c, 0x9e, 0x21, 0xb2], b"no agent available", &[0xc0]]);
    assert_eq!(&bytes[..], &expected[..]);
    let frame = one_frame(&bytes);
    assert!(frame.is_error_response());
    let (msgid, error, result) = decode_response(&bytes);
    assert_eq!((msgid, error.as_deref(), result), (0x5a3c_9e21, Some("no agent available"), None));
}

#[test]
#[rustfmt::skip]
fn nil_fields_are_framed_and_forwarded_like_any_value() {
    let bytes = cat(&[
        &[0x94, 0x00, 0x01, 0xae], b"RPC.PreRequest", &[0x91, 0x82],
        &[0xa9], b"HeadersIn", &[0xc0],
        &[0xa3], b"URI", &[0xc0],
    ]);
    let frame = one_frame(&bytes);
    assert_eq!((frame.msgid(), frame.method(), frame.request_id()), (Some(1), Some(Method::PreRequest), None));
    let update = cat(&[&[0x94, 0x00, 0x02, 0xb1], b"RPC.UpdateRequest", &[0x91, 0x81, 0xa9], b"RequestID", &[0xc0]]);
    assert_eq!(one_frame(&update).request_id(), None, "a nil RequestID is no ID");
}
