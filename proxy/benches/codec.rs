//! Codec hot path: finding the end of a typical ~1.5 KiB PreRequest frame and reading its view,
//! against rmp-serde deserializing the same frame into `RPCMsgIn` (the cost the proxy avoids).
//!
//! `cargo bench -p sigsci-proxy --bench codec -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sigsci_proxy::codec::{Frame, FrameCodec, Limits};
use sigsci_proxy::message::{self, RPCMsgIn, RPCMsgOut};
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
        module_version: "sigsci-module-golang 1.14.0".into(),
        server_version: "go1.22.3".into(),
        server_flavor: String::new(),
        server_name: "shop.example.com".into(),
        timestamp: 1_717_520_896,
        now_millis: 1_717_520_896_123,
        remote_addr: "203.0.113.7".into(),
        method: "POST".into(),
        scheme: "https".into(),
        uri: "/api/v2/cart/items?session=9f8e7d6c&source=catalog&campaign=summer-sale-2024".into(),
        protocol: "HTTP/1.1".into(),
        tls_protocol: "TLSv1.3".into(),
        tls_cipher: "TLS_AES_128_GCM_SHA256".into(),
        response_code: -1,
        response_millis: -1,
        response_size: -1,
        headers_in: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        post_body: r#"{"items":[{"sku":"SHOE-RED-42","qty":1,"price":89.90},{"sku":"SOCK-BLK-M","qty":3,"price":4.50}],"coupon":"SUMMER24","note":"leave at the door, ring twice please","gift":false}"#
            .into(),
        ..Default::default()
    };
    message::encode_request(0x7a3c_9e21, message::PRE_REQUEST, &params)
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
        b.iter(|| black_box(message::decode_request::<RPCMsgIn>(black_box(&frame)).unwrap()))
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

    let response = Frame::parse(
        Bytes::from(message::encode_response(
            7,
            None,
            &RPCMsgOut {
                waf_response: 200,
                request_id: "0f6b1c2e-8d7a-4b3c-9e1f-2a3b4c5d6e7f".into(),
                ..Default::default()
            },
        )),
        &limits,
    )
    .unwrap();
    c.bench_function("rewrite_response_msgid_and_request_id", |b| {
        b.iter(|| {
            black_box(
                response
                    .rewrite(
                        Some(black_box(1)),
                        Some(b"0f6b1c2e-8d7a-4b3c-9e1f-2a3b4c5d6e7f.a1b2c3d4"),
                    )
                    .unwrap(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
