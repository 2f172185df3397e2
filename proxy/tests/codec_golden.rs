//! Golden frames: bytes written by hand from docs/protocol.md and the modules' encoders (Go msgp
//! map-encoded structs with uint32 msgids and signed ints, Node msgpack5 with the smallest unsigned
//! widths and msgid 1, Python umsgpack with random 31-bit msgids), never produced by this crate's
//! encoder or rmp. Each must decode to the right view and typed message, and rewrite must produce
//! the exact bytes a hand-edit would. Byte tables keep one MessagePack item (header, payload) per
//! line pair, so rustfmt is told to leave them alone.

use bytes::{Bytes, BytesMut};
use sigsci_proxy::codec::{Frame, FrameCodec, FrameKind, Limits, Method, error_response};
use sigsci_proxy::message::{self, Action, RPCMsgIn, RPCMsgIn2, RPCMsgOut};
use tokio_util::codec::Decoder;

const UUID: &[u8; 36] = b"7f0c6b2e-3d1a-4c55-9b8e-2a6f1d0c9e42";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
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
        module_version: "1.14.0".into(),
        server_version: "go1.22".into(),
        server_name: "example.com".into(),
        timestamp: 0x665f_4a00,
        now_millis: 0x018f_e38a_1c00,
        remote_addr: "10.0.0.1".into(),
        method: "GET".into(),
        scheme: "http".into(),
        uri: "/search?q=1".into(),
        protocol: "HTTP/1.1".into(),
        response_code: -1,
        response_millis: -1,
        response_size: -1,
        headers_in: vec![
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
    let (msgid, method, params) = message::decode_request::<RPCMsgIn>(&bytes).unwrap();
    assert_eq!((msgid, method.as_str()), (7, message::PRE_REQUEST));
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
    let (_, _, params) = message::decode_request::<RPCMsgIn>(&post).unwrap();
    let expected = RPCMsgIn {
        waf_response: 200,
        response_code: 500,
        response_millis: 1200,
        response_size: 1 << 20,
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
    assert_eq!(message::decode_request::<RPCMsgIn>(&init).unwrap().1, message::MODULE_INIT);
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
    let (_, _, params) = message::decode_request::<RPCMsgIn2>(&bytes).unwrap();
    assert_eq!(
        params,
        RPCMsgIn2 {
            request_id: String::from_utf8(UUID.to_vec()).unwrap(),
            response_code: 200,
            response_millis: 5,
            response_size: 1024,
            headers_out: vec![("Content-Type".into(), "text/html".into())],
        }
    );
    // The proxy strips its affinity token: a 36-byte str8 ID becomes, e.g., a 4-byte fixstr.
    let new = frame.rewrite(Some(300), Some(b"abcd")).unwrap();
    let after_uuid = bytes.windows(36).position(|w| w == UUID).unwrap() + 36;
    let expected = cat(&[
        &[0x94, 0x00, 0xcd, 0x01, 0x2c, 0xb1],
        b"RPC.UpdateRequest",
        &[0x91, 0x85],
        &[0xa9], b"RequestID", &[0xa4], b"abcd",
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
    let (msgid, error, result) = message::decode_response::<RPCMsgOut>(&with).unwrap();
    assert_eq!((msgid, error), (7, None));
    let result = result.unwrap();
    assert_eq!((result.waf_response, result.request_id.as_bytes()), (406, &UUID[..]));
    assert_eq!(result.request_headers, vec![("X-SigSci-Tags".into(), "SQLI".into())]);

    let without = go_pre_response(&[0xa0]);
    let frame = one_frame(&without);
    assert_eq!(frame.request_id(), Some(&b""[..]), "an empty RequestID is still located");

    // Affinity: the proxy appends a token to the ID and gives the module back its own msgid.
    let mut tokened = UUID.to_vec();
    tokened.extend_from_slice(b".0123456789abcdef");
    let new = one_frame(&with).rewrite(Some(1), Some(&tokened)).unwrap();
    let expected = cat(&[
        &[0x94, 0x01, 0x01, 0xc0, 0x83],
        &[0xab], b"WAFResponse", &[0xd1, 0x01, 0x96],
        &[0xa9], b"RequestID", &[0xd9, 53], &tokened,
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
    let (_, _, params) = message::decode_request::<RPCMsgIn>(&pre).unwrap();
    assert_eq!((params.now_millis, params.timestamp), (0x018f_e38a_1c00, 0x665f_4a00));
    assert_eq!((params.server_name.as_str(), params.post_body.as_str()), ("", "{\"user\":\"x\"}\n"));

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
    let (_, _, params) = message::decode_request::<RPCMsgIn2>(&update).unwrap();
    assert_eq!((params.request_id.as_str(), params.response_code, params.response_size), ("r-1.ab", 200, -1));

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
    let (_, _, params) = message::decode_request::<RPCMsgIn>(&post).unwrap();
    assert_eq!((params.response_code, params.response_millis, params.response_size), (500, 1200, 1 << 20));

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
    let result = message::decode_response::<RPCMsgOut>(&response).unwrap().2.unwrap();
    assert_eq!(result.resp_actions, vec![Action(1, vec!["X-Foo".into(), "bar".into()])]);
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
    let (msgid, _, params) = message::decode_request::<RPCMsgIn>(&pre).unwrap();
    assert_eq!(msgid, 0x5a3c_9e21);
    assert_eq!((params.method.as_str(), params.post_body.len(), params.headers_in.len()), ("POST", 300, 0));

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
    assert_eq!(&new.as_bytes()[new.as_bytes().len() - 6..], &[0xa5, b'x', b'y', b'z', b'.', b't']);
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
    let (msgid, error, result) = message::decode_response::<RPCMsgOut>(&bytes).unwrap();
    assert_eq!((msgid, error.as_deref(), result), (0x5a3c_9e21, Some("no agent available"), None));
}

#[test]
#[rustfmt::skip]
fn nil_fields_read_as_defaults() {
    let bytes = cat(&[
        &[0x94, 0x00, 0x01, 0xae], b"RPC.PreRequest", &[0x91, 0x82],
        &[0xa9], b"HeadersIn", &[0xc0],
        &[0xa3], b"URI", &[0xc0],
    ]);
    let (_, _, params) = message::decode_request::<RPCMsgIn>(&bytes).unwrap();
    assert_eq!(params, RPCMsgIn::default());
}
