//! Malformed and hostile clients are closed without affecting anyone else.

mod support;

use std::time::Duration;

use sigsci_proxy::config::{Dur, Options};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the proxy closes the connection; panics if it stays open for 5 s.
async fn closed_by_proxy(mut s: TcpStream) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the proxy should have closed the connection"
    );
}

#[tokio::test]
async fn garbage_huge_frames_and_slow_clients_are_closed_others_are_served() {
    let agent = Agent::start("a").await;
    let proxy = start_proxy(Options {
        frame_read_timeout: Some(Dur(Duration::from_millis(300))),
        ..with_agents(&[&agent])
    })
    .await;

    // Slowloris: the start of a frame, then nothing.
    let mut slow = TcpStream::connect(proxy.rpc).await.unwrap();
    slow.write_all(&[0x94, 0x00, 0x01]).await.unwrap();

    // Garbage: 0xc1 is never valid MessagePack.
    let mut garbage = TcpStream::connect(proxy.rpc).await.unwrap();
    garbage.write_all(&[0xc1; 64]).await.unwrap();

    // A request whose method string declares 2 GiB: rejected from its header.
    let mut huge = TcpStream::connect(proxy.rpc).await.unwrap();
    huge.write_all(&[0x94, 0x00, 0x01, 0xdb, 0x7f, 0xff, 0xff, 0xff, b'R'])
        .await
        .unwrap();

    // Meanwhile a well-behaved module is served.
    assert!(!pre(proxy.rpc).await.is_empty());

    closed_by_proxy(garbage).await;
    closed_by_proxy(huge).await;
    closed_by_proxy(slow).await;
    assert!(!pre(proxy.rpc).await.is_empty());
    let (_, metrics) = http(proxy.admin, "GET", "/metrics").await;
    assert!(metrics.contains("reason=\"malformed\""), "{metrics}");
    assert!(metrics.contains("reason=\"slow_frame\""), "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let agent = Agent::start("a").await;
    let proxy = start_proxy(Options {
        max_connections: Some(2),
        ..with_agents(&[&agent])
    })
    .await;
    let held = [
        TcpStream::connect(proxy.rpc).await.unwrap(),
        TcpStream::connect(proxy.rpc).await.unwrap(),
    ];
    // Let the proxy accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = TcpStream::connect(proxy.rpc).await.unwrap();
    closed_by_proxy(third).await;
    drop(held);
    // Slots come back once the held connections are gone.
    let mut served = false;
    for _ in 0..100 {
        let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
        let req = sigsci_proxy::message::encode_request(1, "RPC.PreRequest", &pre_request());
        let _ = s.write_all(&req).await;
        let mut buf = [0u8; 512];
        if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    proxy.stop().await;
}
