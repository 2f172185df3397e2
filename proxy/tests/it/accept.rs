//! Deferred accept (`--defer-accept`, on by default): the kernel hands the proxy a TCP connection
//! only once its first bytes have arrived, so a connection that has sent nothing yet costs the
//! proxy no wake-up, is not counted as open and holds no `--max-connections` slot, while one
//! that sent its call is served as before. A silent connection is handed over after about a
//! second (the kernel's one SYN-ACK retransmission), so the checks run within that second.

use std::time::{Duration, Instant};

use crate::support::*;
use sigsci_proxy::config::Options;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const OPEN: &str = "sigsci_proxy_connections_open";
const ACCEPTED: &str = "sigsci_proxy_connections_accepted_total";

/// How long the kernel keeps a silent connection out of the accept queue at the proxy's
/// setting, less a margin: past it a check proves nothing and is taken again.
const DEFERRED_FOR: Duration = Duration::from_millis(800);

/// A module's call on a new connection, kept open after its answer.
async fn served_call(rpc: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(rpc).await.unwrap();
    s.write_all(&rpc::encode_request(1, rpc::PRE_REQUEST, &pre_request()))
        .await
        .unwrap();
    let (_, err, _) = read_response(&mut s).await;
    assert_eq!(err, None, "the call is served");
    s
}

/// With one slot: a silent connection, then a call on another. Returns the connections the
/// proxy counts open and how many it accepted while the call was served, or `None` when the
/// machine was too slow to tell within the kernel's second.
async fn silent_then_call(proxy: &RunningProxy) -> Option<(TcpStream, f64, f64)> {
    let accepted = metric(proxy.admin, ACCEPTED).await;
    let started = Instant::now();
    let silent = TcpStream::connect(proxy.rpc).await.unwrap();
    let caller = served_call(proxy.rpc).await;
    let open = metric(proxy.admin, OPEN).await;
    let accepted = metric(proxy.admin, ACCEPTED).await - accepted;
    drop(caller);
    (started.elapsed() < DEFERRED_FOR).then_some((silent, open, accepted))
}

#[tokio::test]
async fn a_connection_that_has_sent_nothing_takes_no_slot_and_is_served_once_it_sends() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let proxy = alone
        .start_proxy(Options {
            max_connections: Some(1),
            ..with_agents(&[&agent])
        })
        .await;
    let mut attempts = 0;
    let (mut silent, open, accepted) = loop {
        attempts += 1;
        assert!(attempts <= 3, "each attempt took over {DEFERRED_FOR:?}");
        if let Some(seen) = silent_then_call(&proxy).await {
            break seen;
        }
    };
    // Only the call's connection was accepted and counted; the one slot was free for it.
    assert_eq!((open, accepted), (1.0, 1.0));
    // The silent connection was not displaced to make room (without deferred accept it held
    // the slot, and the call reset it as the longest idle): once it sends, it is served.
    silent
        .write_all(&rpc::encode_request(2, rpc::PRE_REQUEST, &pre_request()))
        .await
        .unwrap();
    let (msgid, err, _) = read_response(&mut silent).await;
    assert_eq!((msgid, err), (2, None));
    proxy.stop().await;
}

#[tokio::test]
async fn without_deferred_accept_a_silent_connection_is_accepted_and_counted_at_once() {
    // Asserts a gauge: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let proxy = alone
        .start_proxy(Options {
            defer_accept: Some(false),
            ..with_agents(&[&agent])
        })
        .await;
    let open = metric(proxy.admin, OPEN).await;
    let _silent = TcpStream::connect(proxy.rpc).await.unwrap();
    wait_until("the silent connection counted open", async || {
        metric(proxy.admin, OPEN).await == open + 1.0
    })
    .await;
    proxy.stop().await;
}
