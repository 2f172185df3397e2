//! Limits and rejections: a peer cannot make the decoder buffer without bound, recurse without
//! bound, or pass something that is not MessagePack-RPC.

use bytes::BytesMut;
use sigsci_proxy::codec::{CodecError, FrameCodec, Limits};
use tokio_util::codec::Decoder;

/// Feeds `bytes` one at a time; returns how many were fed when the decoder failed, and the error.
fn fail_point(codec: &mut FrameCodec, bytes: &[u8]) -> Option<(usize, CodecError)> {
    let mut buf = BytesMut::new();
    for (i, &b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        match codec.decode(&mut buf) {
            Ok(None) => {}
            Ok(Some(frame)) => panic!("unexpected frame {frame:?}"),
            Err(e) => return Some((i + 1, e)),
        }
    }
    None
}

#[test]
fn str32_declaring_2_gib_is_rejected_when_its_header_completes() {
    // [0, 1, <str32 of 2 GiB>...: the method header alone proves the frame cannot fit.
    let bytes = [0x94, 0x00, 0x01, 0xdb, 0x80, 0x00, 0x00, 0x00, b'R', b'P'];
    let (fed, err) = fail_point(&mut FrameCodec::default(), &bytes).expect("rejected");
    assert_eq!(fed, 8, "rejected at the 5th byte of the str32 header");
    assert!(
        matches!(err, CodecError::FrameTooLarge { needed, max } if needed == 8 + (1 << 31) && max == Limits::DEFAULT_MAX_FRAME_BYTES),
        "{err}"
    );
}

#[test]
fn declared_lengths_beyond_the_limit_are_rejected_before_the_payload() {
    let limits = Limits {
        max_frame_bytes: 1000,
        ..Limits::default()
    };
    let cases: [&[u8]; 4] = [
        &[0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc5, 0x03, 0xe8], // bin16 of 1000 bytes
        &[0x94, 0x00, 0x01, 0xa1, b'm', 0xdc, 0x03, 0xe8],       // params array16 of 1000 items
        &[0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xde, 0x01, 0xf4], // map16 of 500 pairs
        &[
            0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc9, 0x00, 0x00, 0x03, 0xe8, 0x01,
        ], // ext32
    ];
    for bytes in cases {
        let (fed, err) = fail_point(&mut FrameCodec::new(limits), bytes).expect("rejected");
        assert_eq!(fed, bytes.len(), "{bytes:02x?}");
        assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err}");
    }
}

#[test]
fn many_small_items_are_cut_off_at_the_limit() {
    // Each header fits, but the bytes read pass the limit: never more than the limit is buffered.
    let limits = Limits {
        max_frame_bytes: 1000,
        ..Limits::default()
    };
    let mut bytes = vec![0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xdc, 0x01, 0xf4]; // 500 items
    for _ in 0..500 {
        bytes.extend_from_slice(&[0xa2, b'x', b'y']);
    }
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut rejected_at = None;
    for chunk in bytes.chunks(64) {
        buf.extend_from_slice(chunk);
        if let Err(e) = codec.decode(&mut buf) {
            assert!(
                matches!(e, CodecError::FrameTooLarge { max: 1000, .. }),
                "{e}"
            );
            rejected_at = Some(buf.len());
            break;
        }
    }
    let at = rejected_at.expect("rejected");
    assert!(at <= 1000 + 64, "buffered {at} bytes");
}

#[test]
fn a_frame_of_exactly_the_limit_passes_and_one_byte_more_fails() {
    let frame = |body: usize| {
        let mut b = vec![0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc5];
        b.extend_from_slice(&(body as u16).to_be_bytes());
        b.resize(b.len() + body, 0x55);
        b
    };
    let limits = Limits {
        max_frame_bytes: 200,
        ..Limits::default()
    };
    let ok = frame(200 - 9);
    assert_eq!(ok.len(), 200);
    let got = FrameCodec::new(limits)
        .decode(&mut BytesMut::from(&ok[..]))
        .unwrap()
        .unwrap();
    assert_eq!(got.as_bytes(), &ok[..]);
    let err = FrameCodec::new(limits)
        .decode(&mut BytesMut::from(&frame(201 - 9)[..]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::FrameTooLarge {
                needed: 201,
                max: 200
            }
        ),
        "{err}"
    );
}

/// `[0, 1, "m", [[[…]]]]` nested `depth` levels in total (the top-level array is level 1).
fn nested(depth: usize) -> Vec<u8> {
    let mut b = vec![0x94, 0x00, 0x01, 0xa1, b'm'];
    b.extend(std::iter::repeat_n(0x91, depth - 2));
    b.push(0x90);
    b
}

#[test]
fn nesting_depth_33_is_rejected_and_32_accepted() {
    let ok = nested(32);
    let frame = FrameCodec::default()
        .decode(&mut BytesMut::from(&ok[..]))
        .unwrap()
        .unwrap();
    assert_eq!(frame.as_bytes(), &ok[..]);
    let err = FrameCodec::default()
        .decode(&mut BytesMut::from(&nested(33)[..]))
        .unwrap_err();
    assert!(matches!(err, CodecError::TooDeep { max: 32 }), "{err}");
    let shallow = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    assert!(
        FrameCodec::new(shallow)
            .decode(&mut BytesMut::from(&nested(4)[..]))
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        FrameCodec::new(shallow).decode(&mut BytesMut::from(&nested(5)[..])),
        Err(CodecError::TooDeep { max: 4 })
    ));
}

#[test]
fn non_rpc_top_levels_are_rejected() {
    let cases: [&[u8]; 10] = [
        &[0x80],                               // a map
        &[0xa3, b'a', b'b', b'c'],             // a string
        &[0x92, 0x00, 0x01],                   // array of 2
        &[0x95, 0x00],                         // array of 5
        &[0x94, 0x02],                         // notification type in an array of 4
        &[0x93, 0x00],                         // request type in an array of 3
        &[0x94, 0xa0],                         // type not an integer
        &[0x94, 0x00, 0xd0, 0xff],             // negative msgid
        &[0x94, 0x00, 0x01, 0x01],             // method not a string
        &[0x94, 0x00, 0x01, 0xa1, b'm', 0x80], // params not an array
    ];
    for bytes in cases {
        let err = FrameCodec::default()
            .decode(&mut BytesMut::from(bytes))
            .unwrap_err();
        assert!(
            matches!(err, CodecError::NotRpc { .. }),
            "{bytes:02x?}: {err}"
        );
    }
    // Responses take any error and result; notifications a method and a params array.
    for bytes in [
        &[0x94, 0x01, 0x00, 0x01, 0x01][..],
        &[0x93, 0x02, 0xa1, b'm', 0x90],
    ] {
        assert!(
            FrameCodec::default()
                .decode(&mut BytesMut::from(bytes))
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn reserved_byte_is_invalid_messagepack() {
    let err = FrameCodec::default()
        .decode(&mut BytesMut::from(
            &[0x94, 0x00, 0x01, 0xa1, b'm', 0x91, 0xc1][..],
        ))
        .unwrap_err();
    assert!(
        matches!(err, CodecError::InvalidMessagePack { offset: 6, .. }),
        "{err}"
    );
}
