//! Unit tests of the multiplexed connection over a socket pair (the agent's end driven by
//! hand, frames built with the loadtest's encoder, an implementation independent of this
//! crate).

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use tokio::net::{TcpListener, UnixStream};

use super::*;
use crate::config::UpstreamMode;
use loadtest::rpc::{self, RPCMsgIn};

fn request(msgid: u64) -> Frame {
    let params = RPCMsgIn {
        URI: "/x".into(),
        ..Default::default()
    };
    let bytes = rpc::encode_request(msgid, rpc::PRE_REQUEST, &params);
    Frame::parse(Bytes::from(bytes), &Limits::default()).unwrap()
}

/// A connection whose agent end the test holds.
fn conn_over_pair() -> (Arc<MuxConn>, UnixStream) {
    let (proxy, agent) = UnixStream::pair().unwrap();
    let (r, w) = proxy.into_split();
    let conn = MuxConn::spawn(
        r,
        WriteHalf::Unix(w),
        Limits::default(),
        &CancellationToken::new(),
        tracing::Span::none(),
    );
    (conn, agent)
}

#[tokio::test]
async fn a_poisoned_pending_table_fails_no_caller() {
    let (conn, _agent) = conn_over_pair();
    // A panic in another call's task while it held the table.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _held = conn.pending.lock().unwrap();
        panic!("a call's task panics holding the pending table");
    }));
    assert!(conn.pending.is_poisoned());

    // Times out (the deadline is now) and removes its entry without panicking.
    let result = conn.call(&request(7), None, Instant::now()).await;
    assert!(matches!(result, Err(UpstreamError::Timeout)), "{result:?}");
    assert!(
        conn.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn calls_landing_on_a_dead_slot_start_one_reconnect() {
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = UpstreamConfig {
        mode: UpstreamMode::Mux,
        connections: 2,
        connect_timeout: Duration::from_secs(1),
        limits: Limits::default(),
    };
    let exit = CancellationToken::new();
    let conns = Arc::new(AgentConns::new(
        Address::Tcp(agent.local_addr().unwrap()),
        &config,
        &exit,
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    // The first call connects slot 0 inline; slot 1 stays dead.
    conns.get(deadline).await.unwrap();
    assert!(conns.slots[1].live().is_none());

    // Ten calls, half of them landing on the dead slot, before any spawned task runs (one
    // thread, no await point in between that yields).
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    for _ in 0..10 {
        conns.get(deadline).await.unwrap();
    }
    assert_eq!(tasks.num_alive_tasks() - before, 1, "one reconnect task");

    // Once it has run, the slot is live and its reconnect over.
    for _ in 0..100 {
        if conns.slots[1].live().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conns.slots[1].live().is_some());
    assert!(!conns.slots[1].reconnecting.load(Ordering::Acquire));
    exit.cancel();
}
