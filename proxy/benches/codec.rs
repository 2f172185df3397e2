//! Codec hot path: finding the end of a typical ~1.5 KiB PreRequest frame and reading its view,
//! against rmp-serde deserializing the same frame into a typed message (the cost the proxy
//! avoids); the affinity suffix (`affinity::encode` on every PreRequest answer with a
//! RequestID, `affinity::decode` on every UpdateRequest); and the response rewrite that carries
//! the encoded ID. Frames are built with the simulator's encoder, not the proxy's.
//!
//! `cargo bench -p sigsci-proxy --bench codec -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;

use agent_pool::{AffinityToken, EndpointId};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sigsci_proxy::affinity;
use sigsci_proxy::codec::{Frame, FrameCodec, Limits};
use simulator::rpc::{self, Envelope, RPCMsgIn, RPCMsgOut};
use tokio_util::codec::Decoder;

/// Frames per decoder iteration: the decoder is measured in steady state on one read buffer
/// (16 frames, about 21 KiB: a few socket reads' worth, as a busy upstream connection sees).
const STREAM_FRAMES: usize = 16;

fn pre_request() -> Vec<u8> {
    let headers = [
        ("Host", "shop.example.com"),
        (
            "User-Agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/124.0.0.0 Safari/537.36",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.9,fr;q=0.8"),
        ("Accept-Encoding", "gzip, deflate, br"),
        (
            "Cookie",
            "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; cart=3; theme=dark; \
             _ga=GA1.2.1234567890.1717520896; _gid=GA1.2.987654321.1717520896; consent=yes",
        ),
        (
            "Referer",
            "https://shop.example.com/catalog/shoes?color=red&size=42",
        ),
        ("Content-Type", "application/json"),
        ("Content-Length", "212"),
        ("X-Forwarded-For", "203.0.113.7, 10.0.3.17"),
        ("X-Request-Id", "0f6b1c2e-8d7a-4b3c-9e1f-2a3b4c5d6e7f"),
        ("Connection", "keep-alive"),
    ];
    let params = RPCMsgIn {
        ModuleVersion: "sigsci-module-golang 1.14.0".into(),
        ServerVersion: "go1.22.3".into(),
        ServerFlavor: String::new(),
        ServerName: "shop.example.com".into(),
        Timestamp: 1_717_520_896,
        NowMillis: 1_717_520_896_123,
        RemoteAddr: "203.0.113.7".into(),
        Method: "POST".into(),
        Scheme: "https".into(),
        URI: "/api/v2/cart/items?session=9f8e7d6c&source=catalog&campaign=summer-sale-2024".into(),
        Protocol: "HTTP/1.1".into(),
        TLSProtocol: "TLSv1.3".into(),
        TLSCipher: "TLS_AES_128_GCM_SHA256".into(),
        ResponseCode: -1,
        ResponseMillis: -1,
        ResponseSize: -1,
        HeadersIn: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        PostBody: r#"{"items":[{"sku":"SHOE-RED-42","qty":1,"price":89.90},{"sku":"SOCK-BLK-M","qty":3,"price":4.50}],"coupon":"SUMMER24","note":"leave at the door, ring twice please","gift":false}"#
            .into(),
        ..Default::default()
    };
    rpc::encode_request(0x7a3c_9e21, rpc::PRE_REQUEST, &params)
}

fn bench(c: &mut Criterion) {
    let frame = pre_request();
    let len = frame.len() as u64;
    eprintln!("PreRequest frame: {len} bytes");
    let limits = Limits::default();
    let bytes = Bytes::from(frame.clone());

    let mut group = c.benchmark_group("prerequest");
    group.throughput(Throughput::Bytes(len));
    group.bench_function("frame_parse_view", |b| {
        b.iter(|| {
            let f = Frame::parse(black_box(bytes.clone()), &limits).unwrap();
            black_box((f.kind(), f.msgid(), f.method(), f.request_id()));
        })
    });
    group.bench_function("rmp_serde_baseline", |b| {
        b.iter(|| {
            let Ok(Envelope::Request { params, .. }) = rpc::envelope(black_box(&frame)) else {
                unreachable!("a request")
            };
            black_box(rpc::decode_params::<RPCMsgIn>(params).unwrap())
        })
    });
    group.finish();

    let stream = frame.repeat(STREAM_FRAMES);
    let mut group = c.benchmark_group("decoder_stream");
    group.throughput(Throughput::Bytes(len * STREAM_FRAMES as u64));
    group.bench_function("16_prerequests", |b| {
        let mut codec = FrameCodec::new(limits);
        b.iter_batched_ref(
            || BytesMut::from(&stream[..]),
            |buf| {
                while let Some(f) = codec.decode(buf).unwrap() {
                    black_box((f.msgid(), f.method(), f.request_id()));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // The agent's RequestID (a UUID, as the real agent issues) and the token of an agent named
    // as the Kubernetes source names it.
    let id: &[u8] = b"0f6b1c2e-8d7a-4b3c-9e1f-2a3b4c5d6e7f";
    let token = AffinityToken::of(&EndpointId::new("default/sigsci-agent-7d9f8b6c5-x2k4q"));
    let capacity = affinity::class_capacity(id.len());
    let encoded = affinity::encode(id, token, capacity, true).unwrap();
    assert_eq!(
        affinity::decode(&encoded),
        Some((id, affinity::Tag::Full(token)))
    );
    let mut group = c.benchmark_group("affinity");
    group.bench_function("encode", |b| {
        b.iter(|| {
            black_box(affinity::encode(
                black_box(id),
                black_box(token),
                capacity,
                true,
            ))
        })
    });
    group.bench_function("decode_token", |b| {
        b.iter(|| black_box(affinity::decode(black_box(&encoded))))
    });
    // An UpdateRequest whose ID carries no token (a module that bypassed the proxy, a forged
    // suffix): the miss, measured beside the hit.
    group.bench_function("decode_plain_id", |b| {
        b.iter(|| black_box(affinity::decode(black_box(id))))
    });
    group.finish();

    let response = Frame::parse(
        Bytes::from(rpc::encode_response(
            7,
            None,
            &RPCMsgOut {
                WAFResponse: 200,
                RequestID: String::from_utf8(id.to_vec()).unwrap(),
                ..Default::default()
            },
        )),
        &limits,
    )
    .unwrap();
    // What the proxy does to every PreRequest answer that carries a RequestID: encode the
    // suffix and rewrite msgid and ID in one new buffer.
    c.bench_function("rewrite_response_msgid_and_request_id", |b| {
        b.iter(|| {
            let original = response.request_id().unwrap();
            let encoded = affinity::encode(original, black_box(token), capacity, true).unwrap();
            black_box(
                response
                    .rewrite(Some(black_box(1)), Some(&encoded))
                    .unwrap(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
