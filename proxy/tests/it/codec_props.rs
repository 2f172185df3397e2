//! Property tests: random valid RPC frames (random nested values, every integer/string/container
//! width) survive any chunking, any truncation is "need more bytes", garbage never panics, and
//! rewritten frames are what rmp-serde and a byte-exact re-encoding expect.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::Deserialize;
use serde::de::IgnoredAny;
use sigsci_proxy::codec::{Frame, FrameCodec, FrameKind, Limits};
use tokio_util::codec::Decoder;

/// A MessagePack value plus, for each header, which of its valid encodings to use.
#[derive(Clone, Debug)]
enum V {
    Nil,
    Bool(bool),
    Uint(u64, u8),
    Int(i64, u8),
    F32(f32),
    F64(f64),
    Str(Vec<u8>, u8),
    Bin(Vec<u8>, u8),
    Ext(i8, Vec<u8>, u8),
    Array(Vec<V>, u8),
    Map(Vec<(V, V)>, u8),
}

fn pick<T: Copy>(options: &[T], w: u8) -> T {
    options[usize::from(w) % options.len()]
}

fn uint_header(out: &mut Vec<u8>, v: u64, w: u8) {
    let mut forms = vec![0xcf];
    if v < 0x80 {
        forms.push(0x00);
    }
    for (max, lead) in [(0xff, 0xcc), (0xffff, 0xcd), (0xffff_ffff, 0xce)] {
        if v <= max {
            forms.push(lead);
        }
    }
    for (max, lead) in [
        (0x7f, 0xd0),
        (0x7fff, 0xd1),
        (0x7fff_ffff, 0xd2),
        (i64::MAX as u64, 0xd3),
    ] {
        if v <= max {
            forms.push(lead);
        }
    }
    match pick(&forms, w) {
        0x00 => out.push(v as u8),
        lead @ (0xcc | 0xd0) => out.extend_from_slice(&[lead, v as u8]),
        lead @ (0xcd | 0xd1) => [&[lead][..], &(v as u16).to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        lead @ (0xce | 0xd2) => [&[lead][..], &(v as u32).to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        lead => [&[lead][..], &v.to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
    }
}

fn int_header(out: &mut Vec<u8>, v: i64, w: u8) {
    let mut forms = vec![0xd3];
    if v >= -32 {
        forms.push(0xe0);
    }
    for (min, lead) in [
        (i64::from(i8::MIN), 0xd0),
        (i64::from(i16::MIN), 0xd1),
        (i64::from(i32::MIN), 0xd2),
    ] {
        if v >= min {
            forms.push(lead);
        }
    }
    match pick(&forms, w) {
        0xe0 => out.push(v as u8),
        0xd0 => out.extend_from_slice(&[0xd0, v as u8]),
        0xd1 => [&[0xd1][..], &(v as i16).to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        0xd2 => [&[0xd2][..], &(v as i32).to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        _ => [&[0xd3][..], &v.to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
    }
}

/// Length header: `fix` = (lead, max) for the fixed form, then the 8/16/32-bit leads.
fn len_header(out: &mut Vec<u8>, len: usize, w: u8, fix: Option<(u8, usize)>, leads: [u8; 3]) {
    let mut forms = vec![2u8];
    if len <= 0xffff {
        forms.push(1);
    }
    if len <= 0xff && leads[0] != 0 {
        forms.push(0);
    }
    if fix.is_some_and(|(_, max)| len <= max) {
        forms.push(3);
    }
    match pick(&forms, w) {
        0 => out.extend_from_slice(&[leads[0], len as u8]),
        1 => [&[leads[1]][..], &(len as u16).to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        2 => [&[leads[2]][..], &(len as u32).to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        _ => out.push(fix.unwrap().0 | len as u8),
    }
}

fn encode(v: &V, out: &mut Vec<u8>) {
    match v {
        V::Nil => out.push(0xc0),
        V::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        V::Uint(v, w) => uint_header(out, *v, *w),
        V::Int(v, w) => int_header(out, *v, *w),
        V::F32(f) => [&[0xca][..], &f.to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        V::F64(f) => [&[0xcb][..], &f.to_be_bytes()]
            .iter()
            .for_each(|p| out.extend_from_slice(p)),
        V::Str(s, w) => {
            len_header(out, s.len(), *w, Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
            out.extend_from_slice(s);
        }
        V::Bin(s, w) => {
            len_header(out, s.len(), *w, None, [0xc4, 0xc5, 0xc6]);
            out.extend_from_slice(s);
        }
        V::Ext(t, data, w) => {
            let fixed = [1, 2, 4, 8, 16].iter().position(|&n| n == data.len());
            match fixed {
                Some(i) if w % 2 == 0 => out.push(0xd4 + i as u8),
                _ => len_header(out, data.len(), *w / 2, None, [0xc7, 0xc8, 0xc9]),
            }
            out.push(*t as u8);
            out.extend_from_slice(data);
        }
        V::Array(items, w) => {
            len_header(out, items.len(), *w, Some((0x90, 15)), [0, 0xdc, 0xdd]);
            items.iter().for_each(|i| encode(i, out));
        }
        V::Map(pairs, w) => {
            len_header(out, pairs.len(), *w, Some((0x80, 15)), [0, 0xde, 0xdf]);
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

fn ascii(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(b'a'..=b'z', 0..max)
}

fn any_value() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        Just(V::Nil),
        any::<bool>().prop_map(V::Bool),
        (any::<u64>(), any::<u8>()).prop_map(|(v, w)| V::Uint(v, w)),
        (0u64..300, any::<u8>()).prop_map(|(v, w)| V::Uint(v, w)),
        (i64::MIN..0, any::<u8>()).prop_map(|(v, w)| V::Int(v, w)),
        (-200i64..0, any::<u8>()).prop_map(|(v, w)| V::Int(v, w)),
        any::<f32>().prop_map(V::F32),
        any::<f64>().prop_map(V::F64),
        (proptest::collection::vec(any::<u8>(), 0..300), any::<u8>())
            .prop_map(|(s, w)| V::Str(s, w)),
        (proptest::collection::vec(any::<u8>(), 0..40), any::<u8>())
            .prop_map(|(s, w)| V::Bin(s, w)),
        (
            any::<i8>(),
            proptest::collection::vec(any::<u8>(), 0..20),
            any::<u8>()
        )
            .prop_map(|(t, d, w)| V::Ext(t, d, w)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            (proptest::collection::vec(inner.clone(), 0..6), any::<u8>())
                .prop_map(|(v, w)| V::Array(v, w)),
            (
                proptest::collection::vec((inner.clone(), inner), 0..6),
                any::<u8>()
            )
                .prop_map(|(v, w)| V::Map(v, w)),
        ]
    })
}

/// A random RPC frame and the view the decoder should report for it.
#[derive(Clone, Debug)]
struct Rpc {
    value: V,
    kind: FrameKind,
    msgid: Option<u64>,
    method: Option<Vec<u8>>,
    request_id: Option<Vec<u8>>,
}

/// params[0] / result: a map of ASCII keys to random values, maybe with a RequestID among them.
fn id_map() -> impl Strategy<Value = (V, Option<Vec<u8>>)> {
    (
        proptest::collection::vec((ascii(12), any::<u8>(), any_value()), 0..8),
        proptest::option::of((
            ascii(60),
            any::<u8>(),
            any::<u8>(),
            any::<prop::sample::Index>(),
        )),
        any::<u8>(),
    )
        .prop_map(|(entries, id, w)| {
            // Lowercase keys never collide with "RequestID".
            let mut pairs: Vec<(V, V)> = entries
                .into_iter()
                .map(|(k, kw, v)| (V::Str(k, kw), v))
                .collect();
            let id = id.map(|(id, kw, vw, at)| {
                let at = at.index(pairs.len() + 1);
                pairs.insert(
                    at,
                    (V::Str(b"RequestID".to_vec(), kw), V::Str(id.clone(), vw)),
                );
                id
            });
            (V::Map(pairs, w), id)
        })
}

fn rpc() -> impl Strategy<Value = Rpc> {
    let method = prop_oneof![
        Just(b"RPC.PreRequest".to_vec()),
        Just(b"RPC.UpdateRequest".to_vec()),
        Just(b"RPC.PostRequest".to_vec()),
        ascii(20),
    ];
    let msgid = (prop_oneof![any::<u64>(), 0u64..70_000], any::<u8>());
    let request = (
        msgid.clone(),
        method.clone(),
        any::<u8>(),
        id_map(),
        proptest::collection::vec(any_value(), 0..3),
    )
        .prop_map(|((id, idw), method, mw, (map, rid), extra)| {
            let update = method == b"RPC.UpdateRequest";
            let mut params = vec![map];
            if !update {
                params.extend(extra);
            }
            Rpc {
                value: V::Array(
                    vec![
                        V::Uint(0, 0),
                        V::Uint(id, idw),
                        V::Str(method.clone(), mw),
                        V::Array(params, 0),
                    ],
                    0,
                ),
                kind: FrameKind::Request,
                msgid: Some(id),
                method: Some(method),
                request_id: rid.filter(|_| update),
            }
        });
    let response = (
        msgid,
        prop_oneof![Just(V::Nil), any_value()],
        prop_oneof![id_map(), any_value().prop_map(|v| (v, None))],
    )
        .prop_map(|((id, idw), error, (result, rid))| {
            // A result that is a map without our generator's bookkeeping may still hold a RequestID.
            let rid = rid.or_else(|| first_request_id(&result));
            Rpc {
                value: V::Array(vec![V::Uint(1, 0), V::Uint(id, idw), error, result], 0),
                kind: FrameKind::Response,
                msgid: Some(id),
                method: None,
                request_id: rid,
            }
        });
    let notification = (
        method,
        any::<u8>(),
        proptest::collection::vec(any_value(), 0..3),
    )
        .prop_map(|(method, mw, params)| Rpc {
            value: V::Array(
                vec![
                    V::Uint(2, 0),
                    V::Str(method.clone(), mw),
                    V::Array(params, 0),
                ],
                0,
            ),
            kind: FrameKind::Notification,
            msgid: None,
            method: Some(method),
            request_id: None,
        });
    prop_oneof![3 => request, 3 => response, 1 => notification]
}

/// The first string value under a `"RequestID"` key of a map (what the decoder reports).
fn first_request_id(v: &V) -> Option<Vec<u8>> {
    let V::Map(pairs, _) = v else { return None };
    pairs.iter().find_map(|(k, v)| match (k, v) {
        (V::Str(k, _), V::Str(id, _)) if k == b"RequestID" => Some(id.clone()),
        _ => None,
    })
}

fn bytes_of(rpc: &Rpc) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&rpc.value, &mut out);
    out
}

fn check_view(frame: &Frame, rpc: &Rpc) {
    assert_eq!(frame.kind(), rpc.kind);
    assert_eq!(frame.msgid(), rpc.msgid);
    assert_eq!(frame.method_name(), rpc.method.as_deref());
    assert_eq!(frame.request_id(), rpc.request_id.as_deref());
}

/// Decodes `stream` cut at `cuts`; returns the frames and the undecoded remainder.
fn decode_chunked(
    stream: &[u8],
    cuts: &[usize],
) -> Result<(Vec<Frame>, usize), sigsci_proxy::codec::CodecError> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    Ok((frames, buf.len()))
}

fn cuts(len: usize, raw: Vec<prop::sample::Index>) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.into_iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chunked_streams_decode_to_the_original_frames(
        rpcs in proptest::collection::vec(rpc(), 1..5),
        raw_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let encoded: Vec<Vec<u8>> = rpcs.iter().map(bytes_of).collect();
        let stream = encoded.concat();
        let (frames, left) = decode_chunked(&stream, &cuts(stream.len(), raw_cuts)).unwrap();
        prop_assert_eq!(left, 0);
        prop_assert_eq!(frames.len(), rpcs.len());
        for ((frame, rpc), bytes) in frames.iter().zip(&rpcs).zip(&encoded) {
            prop_assert_eq!(frame.as_bytes(), &bytes[..]);
            check_view(frame, rpc);
            prop_assert_eq!(&Frame::parse(Bytes::copy_from_slice(bytes), &Limits::default()).unwrap(), frame);
        }
    }

    #[test]
    fn every_truncation_needs_more_bytes(rpc in rpc()) {
        let bytes = bytes_of(&rpc);
        // Every cut of small frames; an even sample of about 300 cuts of big ones.
        for cut in (0..bytes.len()).step_by((bytes.len() / 300).max(1)) {
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut codec = FrameCodec::default();
            prop_assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {}", cut);
            // The same codec, resumed with the rest, yields the whole frame.
            buf.extend_from_slice(&bytes[cut..]);
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(frame.as_bytes(), &bytes[..]);
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn garbage_never_panics(
        prefix in prop_oneof![Just(vec![]), Just(vec![0x94, 0x00]), Just(vec![0x94, 0x01, 0x01]), Just(vec![0x94, 0x00, 0x01, 0xa1, b'm'])],
        garbage in proptest::collection::vec(any::<u8>(), 0..400),
        raw_cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream = [prefix, garbage].concat();
        if let Ok((frames, left)) = decode_chunked(&stream, &cuts(stream.len(), raw_cuts)) {
            let consumed: usize = frames.iter().map(|f| f.as_bytes().len()).sum();
            prop_assert_eq!(consumed + left, stream.len());
            for frame in frames {
                prop_assert_eq!(&Frame::parse(frame.clone().into_bytes(), &Limits::default()).unwrap(), &frame);
            }
        }
    }

    #[test]
    fn rewrite_yields_the_expected_frame(rpc in rpc(), new_id in any::<u64>(), new_rid in ascii(300)) {
        prop_assume!(rpc.kind != FrameKind::Notification);
        let frame = Frame::parse(Bytes::from(bytes_of(&rpc)), &Limits::default()).unwrap();
        let rid = rpc.request_id.as_ref().map(|_| &new_rid[..]);
        let new = frame.rewrite(Some(new_id), rid).unwrap();
        prop_assert_eq!(&Frame::parse(new.clone().into_bytes(), &Limits::default()).unwrap(), &new);
        prop_assert_eq!(new.msgid(), Some(new_id));
        prop_assert_eq!(new.request_id(), rid.or(rpc.request_id.as_deref()));
        prop_assert_eq!(new.method_name(), frame.method_name());

        // rmp-serde sees the new msgid and RequestID.
        let (kind, msgid, _, _): (u8, u64, IgnoredAny, IgnoredAny) = rmp_serde::from_slice(new.as_bytes()).unwrap();
        prop_assert_eq!((kind, msgid), (if rpc.kind == FrameKind::Request { 0 } else { 1 }, new_id));
        if let Some(rid) = rid {
            #[derive(Deserialize)]
            struct WithId {
                #[serde(rename = "RequestID", with = "serde_bytes_compat")]
                request_id: Vec<u8>,
            }
            let id = if rpc.kind == FrameKind::Request {
                let (_, _, _, params): (u8, u64, IgnoredAny, (WithId,)) = rmp_serde::from_slice(new.as_bytes()).unwrap();
                params.0.request_id
            } else {
                let (_, _, _, result): (u8, u64, IgnoredAny, WithId) = rmp_serde::from_slice(new.as_bytes()).unwrap();
                result.request_id
            };
            prop_assert_eq!(&id[..], rid);
        }
    }
}

/// RequestID read as a UTF-8 string (our generated IDs are ASCII) into bytes.
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}
