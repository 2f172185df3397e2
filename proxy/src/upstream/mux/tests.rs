//! Unit tests of the multiplexed connection over a socket pair (the agent's end driven by
//! hand, frames built with the simulator's encoder, an implementation independent of this
//! crate).

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use tokio::net::{TcpListener, UnixStream};

use super::*;
use crate::config::UpstreamMode;
use simulator::rpc::{self, RPCMsgIn};

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
    let (conn, agent, _) = conn_over_pair_queuing(usize::MAX);
    (conn, agent)
}

/// A connection whose agent connections may queue `cap` bytes together.
fn conn_over_pair_queuing(cap: usize) -> (Arc<MuxConn>, UnixStream, Arc<QueuedBytes>) {
    let (proxy, agent) = UnixStream::pair().unwrap();
    let queued = QueuedBytes::new(cap);
    let config = UpstreamConfig {
        mode: UpstreamMode::Mux,
        connections: 1,
        connect_timeout: Duration::from_secs(1),
        limits: Limits::default(),
        queued: queued.clone(),
    };
    let owner = AgentConns::new(
        Address::Unix("/unused".into()),
        &config,
        &CancellationToken::new(),
    );
    let conn = MuxConn::spawn(Stream::unix(proxy), &owner, tracing::Span::none());
    (conn, agent, queued)
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
        queued: QueuedBytes::new(usize::MAX),
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

/// A PreRequest whose URI is `uri` (the agent end tells the calls apart by it).
fn request_for(uri: &str) -> Frame {
    let params = RPCMsgIn {
        URI: uri.into(),
        ..Default::default()
    };
    let bytes = rpc::encode_request(1, rpc::PRE_REQUEST, &params);
    Frame::parse(Bytes::from(bytes), &Limits::default()).unwrap()
}

/// Reads `n` whole frames on the agent end: (msgid, frame bytes) in arrival order.
async fn read_requests(agent: &mut UnixStream, n: usize) -> Vec<(u64, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < n {
        match rpc::frame_len(&buf, usize::MAX).expect("whole frames, never interleaved") {
            Some(len) => {
                let frame: Vec<u8> = buf.drain(..len).collect();
                let rpc::Envelope::Request { msgid, .. } = rpc::envelope(&frame).unwrap() else {
                    panic!("not a request");
                };
                frames.push((msgid, frame));
            }
            None => {
                let mut chunk = [0u8; 65536];
                let n = agent.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the proxy closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    frames
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

type Answer = Result<Frame, UpstreamError>;

/// Two calls on `conn`, URIs `/first` and `/second`, while `agent_side` plays the agent.
async fn two_calls<F: Future>(conn: &MuxConn, agent_side: F) -> (Answer, Answer, F::Output) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (first, second) = (request_for("/first"), request_for("/second"));
    tokio::join!(
        conn.call(&first, None, deadline),
        conn.call(&second, None, deadline),
        agent_side
    )
}

#[tokio::test]
async fn answers_reach_their_callers_by_msgid_in_any_order() {
    use tokio::io::AsyncWriteExt;
    let (conn, mut agent) = conn_over_pair();
    let agent_side = async {
        let requests = read_requests(&mut agent, 2).await;
        // Answered last one first, each with its request's URI.
        for (msgid, frame) in requests.iter().rev() {
            let uri = if contains(frame, b"/first") {
                "/first"
            } else {
                "/second"
            };
            let answer = rpc::encode_response(*msgid, None, &uri);
            agent.write_all(&answer).await.unwrap();
        }
        requests.len()
    };
    let (a, b, answered) = two_calls(&conn, agent_side).await;
    assert_eq!(answered, 2);
    assert!(contains(a.unwrap().as_bytes(), b"/first"));
    assert!(contains(b.unwrap().as_bytes(), b"/second"));
    assert!(conn.pending.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_closed_connection_fails_every_waiting_call_at_once() {
    let (conn, mut agent) = conn_over_pair();
    let agent_side = async {
        read_requests(&mut agent, 2).await;
        drop(agent); // the agent goes away with both calls unanswered
    };
    let (a, b, ()) = two_calls(&conn, agent_side).await;
    for result in [a, b] {
        assert!(
            matches!(result, Err(UpstreamError::SentNoAnswer(_))),
            "{result:?}"
        );
    }
    assert!(!conn.is_alive());
    // A call after the close sends nothing.
    let late = conn.call(&request(1), None, Instant::now()).await;
    assert!(matches!(late, Err(UpstreamError::NotSent(_))), "{late:?}");
}

#[tokio::test]
async fn frames_the_socket_could_not_take_at_once_arrive_whole_and_in_order() {
    use tokio::io::AsyncWriteExt;
    let (conn, mut agent) = conn_over_pair();
    let deadline = Instant::now() + Duration::from_secs(10);
    // 40 requests of ~64 KiB: far more than a socket pair buffers, so most are queued behind
    // a partial write and flushed as the agent reads.
    let uri = "/".repeat(64 << 10);
    let requests: Vec<Frame> = (0..40).map(|_| request_for(&uri)).collect();
    let calls = futures::future::join_all(requests.iter().map(|r| conn.call(r, None, deadline)));
    let agent_side = async {
        let got = read_requests(&mut agent, 40).await;
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=40).collect::<Vec<u64>>(), "sent in call order");
        for (msgid, _) in &got {
            agent
                .write_all(&rpc::encode_response(*msgid, None, &0))
                .await
                .unwrap();
        }
    };
    let (answers, ()) = tokio::join!(calls, agent_side);
    assert!(answers.iter().all(Result::is_ok));
}

/// An agent that reads nothing fills the connection's queue only up to the proxy-wide cap:
/// past it a call fails at once, unsent (backlogged), and a closed connection gives its share
/// back (and frees it).
#[tokio::test]
async fn queued_bytes_stop_at_the_proxy_wide_cap_and_go_back_on_close() {
    let cap = 1 << 20;
    let (conn, _agent, queued) = conn_over_pair_queuing(cap);
    let frame = request_for(&"/".repeat(64 << 10));
    let len = frame.as_bytes().len();
    let mut backlogged = 0;
    for _ in 0..64 {
        // A deadline in the past: each call sends (or fails to) and gives up at once.
        match conn.call(&frame, None, Instant::now()).await {
            Err(UpstreamError::Backlogged) => backlogged += 1,
            Err(UpstreamError::Timeout) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        backlogged > 0,
        "the socket pair and the cap took 64 frames of {len} bytes"
    );
    // Within the cap, plus the rest of one frame partly written when the socket filled.
    assert!(queued.get() <= cap + len, "{} queued", queued.get());
    assert!(queued.get() > 0);
    conn.close();
    assert_eq!(queued.get(), 0);
    assert_eq!(conn.outbox.lock().unwrap().queued.capacity(), 0);
}
