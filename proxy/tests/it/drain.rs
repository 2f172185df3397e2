//! Drain: readiness flips at once, in-flight RPCs complete, idle connections close, `run`
//! returns as soon as nothing is left (or reports what the drain timeout cut off).

use std::time::Duration;

use crate::support::*;
use sigsci_proxy::config::{Dur, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(start_paused = true)]
async fn drain_flips_readiness_finishes_in_flight_rpcs_and_exits() {
    let agent = Agent::slow(Duration::from_millis(400)).await;
    let proxy = start_proxy(Options {
        drain_delay: Some(Dur(Duration::from_millis(100))),
        drain_timeout: Some(Dur(Duration::from_secs(10))),
        ..with_agents(&[&agent])
    })
    .await;
    assert_eq!(http(proxy.admin, "GET", "/readyz").await.0, 200);

    // An idle persistent connection (one answered call, kept open).
    let mut idle = TcpStream::connect(proxy.rpc).await.unwrap();
    idle.write_all(&rpc::encode_request(1, rpc::MODULE_INIT, &pre_request()))
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.1, None);

    // An RPC in flight when the drain starts.
    let rpc = proxy.rpc;
    let in_flight = tokio::spawn(async move {
        let (_, err, reply) = call(rpc, 5, crate::support::rpc::PRE_REQUEST, &pre_request()).await;
        (err, reply)
    });
    wait_until("the agent got the call", async || agent.pre() > 0).await;

    let answer = sigsci_proxy::request_drain(&proxy.control).await.unwrap();
    assert_eq!(answer, "draining");
    assert_eq!(
        http(proxy.admin, "GET", "/readyz").await.0,
        503,
        "not ready at once"
    );

    let (err, reply) = in_flight.await.unwrap();
    assert_eq!(err, None, "the in-flight RPC completes");
    assert!(!out(reply).RequestID.is_empty());

    let report = tokio::time::timeout(Duration::from_secs(8), proxy.task)
        .await
        .expect("run returns well before the drain timeout")
        .unwrap()
        .unwrap();
    assert_eq!(report.cut_off, 0);
    // The idle connection was closed, and the listener is gone.
    assert_eq!(read_frame(&mut idle, &mut Vec::new()).await, None);
    assert!(TcpStream::connect(rpc).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_reports_the_rpcs_it_cut_off() {
    let agent = Agent::slow(Duration::from_secs(30)).await;
    let proxy = start_proxy(Options {
        drain_delay: Some(Dur(Duration::from_millis(10))),
        drain_timeout: Some(Dur(Duration::from_millis(300))),
        rpc_timeout: Some(Dur(Duration::from_secs(20))),
        frame_read_timeout: Some(Dur(Duration::from_secs(20))),
        ..with_agents(&[&agent])
    })
    .await;
    let rpc = proxy.rpc;
    let _stuck = tokio::spawn(async move {
        let mut s = TcpStream::connect(rpc).await.unwrap();
        s.write_all(&rpc::encode_request(1, rpc::PRE_REQUEST, &pre_request()))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf).await;
    });
    wait_until("the agent got the call", async || agent.pre() > 0).await;
    let report = proxy.stop().await;
    assert_eq!(report.cut_off, 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_connected_before_the_listeners_close_is_still_answered() {
    let agent = Agent::start().await;
    let proxy = start_proxy(Options {
        drain_delay: Some(Dur(Duration::from_millis(200))),
        drain_timeout: Some(Dur(Duration::from_secs(10))),
        ..with_agents(&[&agent])
    })
    .await;
    assert_eq!(
        sigsci_proxy::request_drain(&proxy.control).await.unwrap(),
        "draining"
    );
    // A module's connection, accepted during the drain delay, whose request is written only
    // once the listeners have closed (a busy node): a close without an answer would hang a
    // Node module's HTTP request. Once the drain has started (readiness off) the listener no
    // longer defers accepts, so the connection is queued before it sends.
    wait_until("readiness off", async || {
        http(proxy.admin, "GET", "/readyz").await.0 == 503
    })
    .await;
    let call = TcpStream::connect(proxy.rpc).await.unwrap();
    let closing = std::time::Instant::now();
    while TcpStream::connect(proxy.rpc).await.is_ok() {
        assert!(
            closing.elapsed() < Duration::from_secs(10),
            "the listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut call = call;
    call.write_all(&rpc::encode_request(7, rpc::PRE_REQUEST, &pre_request()))
        .await
        .unwrap();
    let answer = read_frame(&mut call, &mut Vec::new())
        .await
        .expect("an answer, not a close");
    assert_eq!(rpc::decode_response(&answer).unwrap().0, 7);
    assert_eq!(rpc::decode_response(&answer).unwrap().1, None);
    let report = tokio::time::timeout(Duration::from_secs(8), proxy.task)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    assert_eq!(report.cut_off, 0);
}

/// Modules that keep connecting after the drain delay (a node still routing to this replica):
/// the listener takes what waits in its backlog, then closes anyway, so the drain ends. It
/// used to keep accepting for as long as it was never quiet for 1 ms.
#[tokio::test]
async fn the_listeners_close_under_a_steady_stream_of_connections() {
    let agent = Agent::start().await;
    let proxy = start_proxy(Options {
        drain_delay: Some(Dur(Duration::from_millis(100))),
        drain_timeout: Some(Dur(Duration::from_secs(10))),
        ..with_agents(&[&agent])
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connectors: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let rpc = proxy.rpc;
            tokio::spawn(async move {
                let mut connections = 0u32;
                // Bounded: 5,000 connections each at most; a reset on close leaves no TIME_WAIT.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && connections < 5_000 {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.set_zero_linger().unwrap();
                    if socket.connect(rpc).await.is_ok() {
                        connections += 1;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let drain_asked = std::time::Instant::now();
    assert_eq!(
        sigsci_proxy::request_drain(&proxy.control).await.unwrap(),
        "draining"
    );
    let closed = loop {
        if TcpStream::connect(proxy.rpc).await.is_err() {
            break drain_asked.elapsed();
        }
        if drain_asked.elapsed() > Duration::from_secs(3) {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("the listener still accepted 3 s after the drain began, under steady load");
        }
        tokio::task::yield_now().await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in connectors {
        c.await.unwrap();
    }
    // 100 ms of drain delay, at most 50 ms taking the backlog; the rest is a busy machine.
    assert!(closed < Duration::from_secs(1), "closed after {closed:?}");
    let report = tokio::time::timeout(Duration::from_secs(8), proxy.task)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    assert_eq!(report.cut_off, 0);
}
