//! Drain: readiness flips at once, in-flight RPCs complete, idle connections close, `run`
//! returns as soon as nothing is left (or reports what the drain timeout cut off).

mod support;

use std::time::Duration;

use futures::StreamExt;
use sigsci_proxy::codec::FrameCodec;
use sigsci_proxy::config::{Dur, Options};
use sigsci_proxy::message::{self, RPCMsgOut};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn drain_flips_readiness_finishes_in_flight_rpcs_and_exits() {
    let agent = Agent::start_with("slow", Behavior::Slow(Duration::from_millis(400))).await;
    let proxy = start_proxy(Options {
        drain_delay: Some(Dur(Duration::from_millis(100))),
        drain_timeout: Some(Dur(Duration::from_secs(10))),
        ..with_agents(&[&agent])
    })
    .await;
    assert_eq!(http(proxy.admin, "GET", "/readyz").await.0, 200);

    // An idle persistent connection (one answered call, kept open).
    let mut idle = TcpStream::connect(proxy.rpc).await.unwrap();
    idle.write_all(&message::encode_request(
        1,
        message::MODULE_INIT,
        &pre_request(),
    ))
    .await
    .unwrap();
    let mut frames = tokio_util::codec::FramedRead::new(idle, FrameCodec::default());
    frames.next().await.unwrap().unwrap();

    // An RPC in flight when the drain starts.
    let rpc = proxy.rpc;
    let in_flight = tokio::spawn(async move {
        let (_, err, out): (_, _, Option<RPCMsgOut>) =
            call(rpc, 5, message::PRE_REQUEST, &pre_request()).await;
        (err, out)
    });
    wait_until("the agent got the call", || agent.pre() > 0).await;

    let answer = sigsci_proxy::request_drain(&proxy.control).await.unwrap();
    assert_eq!(answer, "draining");
    assert_eq!(
        http(proxy.admin, "GET", "/readyz").await.0,
        503,
        "not ready at once"
    );

    let (err, out) = in_flight.await.unwrap();
    assert_eq!(err, None, "the in-flight RPC completes");
    assert!(!out.unwrap().request_id.is_empty());

    let report = tokio::time::timeout(Duration::from_secs(8), proxy.task)
        .await
        .expect("run returns well before the drain timeout")
        .unwrap()
        .unwrap();
    assert_eq!(report.cut_off, 0);
    // The idle connection was closed, and the listener is gone.
    let mut idle = frames.into_inner();
    let mut buf = [0u8; 16];
    assert!(matches!(idle.read(&mut buf).await, Ok(0) | Err(_)));
    assert!(TcpStream::connect(rpc).await.is_err());
}

#[tokio::test]
async fn drain_timeout_reports_the_rpcs_it_cut_off() {
    let agent = Agent::start_with("stuck", Behavior::Slow(Duration::from_secs(30))).await;
    let proxy = start_proxy(Options {
        drain_delay: Some(Dur(Duration::from_millis(10))),
        drain_timeout: Some(Dur(Duration::from_millis(300))),
        rpc_timeout: Some(Dur(Duration::from_secs(20))),
        ..with_agents(&[&agent])
    })
    .await;
    let rpc = proxy.rpc;
    let _stuck = tokio::spawn(async move {
        let mut s = TcpStream::connect(rpc).await.unwrap();
        s.write_all(&message::encode_request(
            1,
            message::PRE_REQUEST,
            &pre_request(),
        ))
        .await
        .unwrap();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf).await;
    });
    wait_until("the agent got the call", || agent.pre() > 0).await;
    let report = proxy.stop().await;
    assert_eq!(report.cut_off, 1);
}

#[tokio::test]
async fn a_call_connected_before_the_listeners_close_is_still_answered() {
    let agent = Agent::start("a").await;
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
    // Node module's HTTP request.
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
    call.write_all(&message::encode_request(
        7,
        message::PRE_REQUEST,
        &pre_request(),
    ))
    .await
    .unwrap();
    let mut frames = tokio_util::codec::FramedRead::new(call, FrameCodec::default());
    let answer = frames
        .next()
        .await
        .expect("an answer, not a close")
        .unwrap();
    assert_eq!(answer.msgid(), Some(7));
    assert!(!answer.is_error_response());
    let report = tokio::time::timeout(Duration::from_secs(8), proxy.task)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    assert_eq!(report.cut_off, 0);
}

/// Polls `done` every 5 ms; panics naming `what` after 10 s (a test must stop by itself).
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
