//! Unit tests of the walker, the view and rewrite on frames built with the simulator's typed
//! encoder (`simulator::rpc`, an implementation independent of this crate).
//! Wire-exact frames of the real modules and property tests live in `proxy/tests/codec_*.rs`.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::*;
use simulator::rpc::{self, RPCMsgIn, RPCMsgIn2, RPCMsgOut, Reply};

fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("valid frames") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

#[test]
fn request_view_has_kind_msgid_method() {
    let params = RPCMsgIn {
        URI: "/x".into(),
        ..Default::default()
    };
    let bytes = rpc::encode_request(70_000, rpc::PRE_REQUEST, &params);
    let frame = Frame::parse(Bytes::from(bytes.clone()), &Limits::default()).unwrap();
    assert_eq!(frame.kind(), FrameKind::Request);
    assert_eq!(frame.msgid(), Some(70_000));
    assert_eq!(frame.method(), Some(Method::PreRequest));
    assert_eq!(frame.method_name(), Some(&b"RPC.PreRequest"[..]));
    assert_eq!(
        frame.request_id(),
        None,
        "PreRequest requests carry no RequestID"
    );
    assert!(!frame.is_error_response());
    assert_eq!(frame.as_bytes(), &bytes[..]);
}

#[test]
fn update_request_exposes_request_id() {
    let params = RPCMsgIn2 {
        RequestID: "abc-123".into(),
        ResponseCode: 200,
        ..Default::default()
    };
    let bytes = rpc::encode_request(5, rpc::UPDATE_REQUEST, &params);
    let frame = Frame::parse(Bytes::from(bytes), &Limits::default()).unwrap();
    assert_eq!(frame.method(), Some(Method::UpdateRequest));
    assert_eq!(frame.request_id(), Some(&b"abc-123"[..]));
}

#[test]
fn response_exposes_request_id_and_error() {
    let out = RPCMsgOut {
        WAFResponse: 200,
        RequestID: "rid".into(),
        ..Default::default()
    };
    let frame = Frame::parse(
        Bytes::from(rpc::encode_response(9, None, &out)),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(frame.kind(), FrameKind::Response);
    assert_eq!(frame.msgid(), Some(9));
    assert_eq!(frame.method(), None);
    assert_eq!(frame.request_id(), Some(&b"rid"[..]));
    assert!(!frame.is_error_response());

    let err = Frame::parse(error_response(9, "no agent available"), &Limits::default()).unwrap();
    assert!(err.is_error_response());
    assert_eq!(err.msgid(), Some(9));
    let (msgid, error, result) = rpc::decode_response(err.as_bytes()).unwrap();
    assert_eq!(
        (msgid, error.as_deref(), result),
        (9, Some("no agent available"), Reply::Nil(()))
    );
}

#[test]
fn frames_split_byte_by_byte_decode_identically() {
    let a = rpc::encode_request(1, rpc::PRE_REQUEST, &RPCMsgIn::default());
    let b = rpc::encode_response(
        1,
        None,
        &RPCMsgOut {
            RequestID: "x".repeat(300),
            ..Default::default()
        },
    );
    let stream: Vec<u8> = [a.clone(), b.clone()].concat();
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &byte in &stream {
        buf.extend_from_slice(&[byte]);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].as_bytes(), &a[..]);
    assert_eq!(frames[1].as_bytes(), &b[..]);
    assert_eq!(frames[1].request_id().map(<[u8]>::len), Some(300));
}

#[test]
fn rewrite_changes_msgid_and_request_id_only() {
    let out = RPCMsgOut {
        WAFResponse: 406,
        RequestID: "short".into(),
        ..Default::default()
    };
    let frame = Frame::parse(
        Bytes::from(rpc::encode_response(3, None, &out)),
        &Limits::default(),
    )
    .unwrap();
    let long = "y".repeat(40);
    let new = frame
        .rewrite(Some(u64::MAX), Some(long.as_bytes()))
        .unwrap();
    assert_eq!(new.msgid(), Some(u64::MAX));
    assert_eq!(new.request_id(), Some(long.as_bytes()));
    assert_eq!(
        Frame::parse(new.clone().into_bytes(), &Limits::default()).unwrap(),
        new
    );
    let (msgid, error, result) = rpc::decode_response(new.as_bytes()).unwrap();
    assert_eq!((msgid, error), (u64::MAX, None));
    assert_eq!(
        result,
        Reply::Out(RPCMsgOut {
            RequestID: long,
            ..out
        })
    );
}

#[test]
fn rewrite_refuses_missing_fields() {
    let frame = Frame::parse(
        Bytes::from(rpc::encode_request(
            1,
            rpc::PRE_REQUEST,
            &RPCMsgIn::default(),
        )),
        &Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        frame.rewrite(None, Some(b"x")),
        Err(CodecError::NotRewritable { .. })
    ));
    let notification = Frame::parse(
        Bytes::from_static(&[0x93, 0x02, 0xa1, b'm', 0x90]),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(notification.kind(), FrameKind::Notification);
    assert_eq!(notification.msgid(), None);
    assert!(matches!(
        notification.rewrite(Some(1), None),
        Err(CodecError::NotRewritable { .. })
    ));
}

#[test]
fn garbage_at_top_level_is_not_rpc() {
    let mut codec = FrameCodec::default();
    for bytes in [
        &[0x01][..],
        &[0x92, 0x00, 0x00],
        &[0x94, 0x05, 0x00, 0xa0, 0x90],
        &[0x94, 0x00, 0xff, 0xa0, 0x90],
    ] {
        let err = codec.decode(&mut BytesMut::from(bytes)).unwrap_err();
        assert!(
            matches!(err, CodecError::NotRpc { .. }),
            "{bytes:02x?}: {err}"
        );
    }
    let err = codec
        .decode(&mut BytesMut::from(&[0x94, 0xc1][..]))
        .unwrap_err();
    assert!(
        matches!(err, CodecError::InvalidMessagePack { offset: 1, .. }),
        "{err}"
    );
}

#[test]
fn eof_inside_a_frame_is_truncated() {
    let bytes = rpc::encode_request(1, rpc::PRE_REQUEST, &RPCMsgIn::default());
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(CodecError::Truncated { .. })
    ));
    assert_eq!(decode_all(&mut FrameCodec::default(), &bytes).len(), 1);
}

#[test]
fn rewrite_keeps_the_request_id_header_class_the_sender_used() {
    // An agent whose encoder predates str8 sends a 36-byte ID as str16; a 24-byte one as fixstr.
    let answer = |header: &[u8], id: &[u8]| {
        let mut f = vec![0x94, 0x01, 0x03, 0xc0, 0x81, 0xa9];
        f.extend_from_slice(b"RequestID");
        f.extend_from_slice(header);
        f.extend_from_slice(id);
        Frame::parse(Bytes::from(f), &Limits::default()).unwrap()
    };
    let uuid = [b'u'; 36];
    let old_spec = answer(&[0xda, 0x00, 36], &uuid);
    assert_eq!(old_spec.request_id_capacity(), Some(65_535));
    let tagged = old_spec.rewrite(None, Some(&[b't'; 52])).unwrap();
    let at = tagged.as_bytes().len() - 52 - 3;
    assert_eq!(
        tagged.as_bytes()[at..at + 3],
        [0xda, 0x00, 52],
        "still str16"
    );
    let restored = tagged.rewrite(None, Some(&uuid)).unwrap();
    assert_eq!(restored.as_bytes(), old_spec.as_bytes());

    let hex = answer(&[0xa0 | 24], &[b'h'; 24]);
    assert_eq!(hex.request_id_capacity(), Some(31));
    // Within the class: fixstr; beyond it: the smallest class that fits.
    let fits = hex.rewrite(None, Some(&[b't'; 31])).unwrap();
    assert_eq!(fits.as_bytes()[fits.as_bytes().len() - 32], 0xbf);
    let grows = hex.rewrite(None, Some(&[b't'; 40])).unwrap();
    assert_eq!(grows.as_bytes()[grows.as_bytes().len() - 42], 0xd9);
    assert_eq!(grows.request_id(), Some(&[b't'; 40][..]));
}
