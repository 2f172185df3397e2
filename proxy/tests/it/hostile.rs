//! Malformed and hostile clients are closed without affecting anyone else.

use std::time::Duration;

use crate::support::*;
use sigsci_proxy::config::{Dur, Options};
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

#[tokio::test(start_paused = true)]
async fn garbage_huge_frames_and_slow_clients_are_closed_others_are_served() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let proxy = alone
        .start_proxy(Options {
            frame_read_timeout: Some(Dur(Duration::from_millis(300))),
            rpc_timeout: Some(Dur(Duration::from_millis(300))),
            connect_timeout: Some(Dur(Duration::from_millis(300))),
            ..with_agents(&[&agent])
        })
        .await;

    let malformed = r#"sigsci_proxy_connections_closed_total{reason="malformed"}"#;
    let slow_frame = r#"sigsci_proxy_connections_closed_total{reason="slow_frame"}"#;
    let before = (
        metric(proxy.admin, malformed).await,
        metric(proxy.admin, slow_frame).await,
    );

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
    assert!(metric(proxy.admin, malformed).await > before.0);
    assert!(metric(proxy.admin, slow_frame).await > before.1);
    proxy.stop().await;
}

/// Sends a PreRequest on `s` without waiting for the answer.
async fn send_pre(s: &mut TcpStream, msgid: u64) {
    let req = rpc::encode_request(msgid, rpc::PRE_REQUEST, &pre_request());
    s.write_all(&req).await.unwrap();
}

/// A connection that made one call and holds still: idle to the proxy (one that never sent
/// anything is not even accepted yet, `--defer-accept`).
async fn idle_after_a_call(rpc: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(rpc).await.unwrap();
    send_pre(&mut s, 1).await;
    let (_, err, _) = read_response(&mut s).await;
    assert_eq!(err, None);
    s
}

/// How the proxy ended the connection: `Ok(bytes read before the end)` for a clean close,
/// `Err` for a reset; panics after 5 s.
async fn how_it_ends(mut s: TcpStream) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the proxy should have ended the connection")
}

#[tokio::test]
async fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let proxy = alone
        .start_proxy(Options {
            max_connections: Some(2),
            ..with_agents(&[&agent])
        })
        .await;
    let evicted = r#"sigsci_proxy_connections_closed_total{reason="evicted_idle"}"#;
    let evicted_before = metric(proxy.admin, evicted).await;
    let oldest = idle_after_a_call(proxy.rpc).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = idle_after_a_call(proxy.rpc).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A module's call at the limit is served; the idle connection held longest pays for it,
    // with a reset (never a clean close, on which some modules hang).
    assert!(!pre(proxy.rpc).await.is_empty(), "served at the limit");
    let ended = how_it_ends(oldest).await;
    assert_eq!(
        ended.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(metric(proxy.admin, evicted).await - evicted_before, 1.0);
    drop(newer);
    proxy.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_with_every_connection_busy_a_new_one_is_reset_at_once() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::slow(Duration::from_millis(300)).await;
    let proxy = alone
        .start_proxy(Options {
            max_connections: Some(2),
            ..with_agents(&[&agent])
        })
        .await;
    let limit = r#"sigsci_proxy_uninspected_total{reason="connection_limit"}"#;
    let limit_before = metric(proxy.admin, limit).await;
    let mut busy = Vec::new();
    for id in 0..2 {
        let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
        send_pre(&mut s, id).await;
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let mut third = TcpStream::connect(proxy.rpc).await.unwrap();
    let _ = third.write_all(b"\x94").await;
    let ended = how_it_ends(third).await;
    let elapsed = started.elapsed();
    assert_eq!(
        ended.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "a reset, not a clean close"
    );
    // 5 ms is the target; a loaded 2-core test machine gets slack, still far below 100 ms.
    assert!(
        elapsed < Duration::from_millis(50),
        "reset after {elapsed:?}"
    );
    // The busy ones were not touched: both get their answers.
    for s in busy {
        assert!(how_it_ends_after_answer(s).await > 0);
    }
    assert_eq!(metric(proxy.admin, limit).await - limit_before, 1.0);
    proxy.stop().await;
}

/// Bytes of the answer read on `s` (waits up to 5 s for some).
async fn how_it_ends_after_answer(mut s: TcpStream) -> usize {
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_pipelining_module_held_back_by_the_in_flight_limit_is_not_a_slow_sender() {
    // Each call takes 200 ms, longer than the 100 ms frame-read timeout. `validate` refuses
    // an --rpc-timeout above --frame-read-timeout; the call outlasting it stands for any wait
    // of the proxy's own making (in real time an --rpc-timeout equal to it races the timer).
    let agent = Agent::slow(Duration::from_millis(200)).await;
    let config = sigsci_proxy::Config::from_options(Options {
        max_in_flight_per_connection: Some(1),
        frame_read_timeout: Some(Dur(Duration::from_millis(100))),
        ..with_agents(&[&agent])
    });
    assert!(config.rpc_timeout > Duration::from_millis(200));
    let proxy = start_config(config).await;

    // Three complete requests in one write: the second and third wait for the first answer.
    let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
    let mut pipelined = Vec::new();
    for msgid in 1..=3 {
        pipelined.extend(rpc::encode_request(msgid, rpc::PRE_REQUEST, &pre_request()));
    }
    s.write_all(&pipelined).await.unwrap();
    for msgid in 1..=3 {
        let (answered, error, _) = read_response(&mut s).await;
        assert_eq!((answered, error), (msgid, None), "answered, not reset");
    }
    proxy.stop().await;
}
