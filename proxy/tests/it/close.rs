//! How the proxy closes a connection the module closed first: modules open a connection per RPC
//! and close it after reading the answer, so every close the proxy answers with a FIN leaves the
//! module's host a TIME_WAIT socket for 60 s, and past ~470 RPC/s an app pod has no ephemeral
//! port left. With nothing in flight the proxy resets instead; a module that half-closes with a
//! call in flight still gets its answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use sigsci_proxy::config::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The TCP state of the connection from local port `local` to `remote` on this host, as
/// /proc/net/tcp shows it (`06` is TIME_WAIT), or `None` once it is gone.
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16).unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (port(f[1]) == local.port() && port(f[2]) == remote.port()).then(|| f[3].to_owned())
    })
}

const TIME_WAIT: &str = "06";

/// One module-like call (connect, PreRequest, read the answer, close first), then the state its
/// socket ends in once the proxy's answer to the close has arrived: `None` (gone) or TIME_WAIT.
async fn call_and_close(rpc: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(rpc).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(&rpc::encode_request(1, rpc::PRE_REQUEST, &pre_request()))
        .await
        .unwrap();
    let (_, err, _) = read_response(&mut s).await;
    assert_eq!(err, None);
    drop(s);
    // FIN_WAIT_1/2 until the proxy answers the close; then gone (reset) or TIME_WAIT (FIN).
    let started = Instant::now();
    loop {
        let state = tcp_state(local, rpc);
        if state.as_deref().is_none_or(|s| s == TIME_WAIT) {
            return state;
        }
        assert!(started.elapsed() < PATIENCE, "still {state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const RESETS: &str = "sigsci_proxy_module_closes_total{close=\"reset\"}";
const FINS: &str = "sigsci_proxy_module_closes_total{close=\"fin\"}";

// One test: the metrics recorder is the process's, so the cases run one after another and each
// checks the counters' increase.
#[tokio::test]
async fn closes_a_module_closed_first_with_a_reset_unless_a_call_is_in_flight() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let slow = Agent::slow(Duration::from_millis(200)).await;

    // Nothing in flight when the module closes: a reset, so no TIME_WAIT on its side.
    let proxy = alone.start_proxy(with_agents(&[&agent])).await;
    let resets = metric(proxy.admin, RESETS).await;
    for _ in 0..3 {
        assert_eq!(call_and_close(proxy.rpc).await, None, "no TIME_WAIT");
    }
    assert_eq!(metric(proxy.admin, RESETS).await, resets + 3.0);
    proxy.stop().await;

    // The reset turned off: a FIN answers the module's FIN, and it waits out TIME_WAIT.
    let proxy = alone
        .start_proxy(Options {
            reset_closed_idle: Some(false),
            ..with_agents(&[&agent])
        })
        .await;
    let fins = metric(proxy.admin, FINS).await;
    assert_eq!(call_and_close(proxy.rpc).await.as_deref(), Some(TIME_WAIT));
    assert_eq!(metric(proxy.admin, FINS).await, fins + 1.0);
    proxy.stop().await;

    // A half-close while the call is in flight (the agent takes 200 ms): the module may still
    // read, so it gets its answer, then a FIN, not a reset.
    let proxy = alone.start_proxy(with_agents(&[&slow])).await;
    let fins = metric(proxy.admin, FINS).await;
    let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
    s.write_all(&rpc::encode_request(5, rpc::PRE_REQUEST, &pre_request()))
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut buf = Vec::new();
    let frame = read_frame(&mut s, &mut buf).await.expect("the answer");
    let (msgid, err, _) = rpc::decode_response(&frame).unwrap();
    assert_eq!((msgid, err), (5, None));
    let mut rest = [0u8; 1];
    assert_eq!(
        s.read(&mut rest).await.expect("a FIN, not a reset"),
        0,
        "then the proxy closes"
    );
    assert_eq!(metric(proxy.admin, FINS).await, fins + 1.0);
    proxy.stop().await;
}
