//! Unit tests of the connection state machine over a socket pair: the module's end is driven
//! by hand, frames are built with the simulator's encoder, and the pool is empty, so every call
//! is answered at once with the proxy's own error frame (what happens to a call is the
//! router's business, tested elsewhere; here it is what happens to the connection).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::admission::Admission;
use crate::config::{Config, Options};
use crate::in_flight::InFlightCount;
use simulator::rpc::{self, RPCMsgIn};

/// A connection served over a socket pair; the test holds the module's end.
struct Served {
    module: UnixStream,
    task: JoinHandle<()>,
    stop: CancellationToken,
    _exit: CancellationToken,
}

async fn served(config: Config) -> Served {
    let pool = agent_pool::Pool::new(config.pool_config());
    let (stop, exit) = (CancellationToken::new(), CancellationToken::new());
    let in_flight = Arc::new(InFlightCount::default());
    let overload = crate::overload::OverloadQueue::new(pool.clone(), Default::default());
    let shared = crate::server::shared_state(&config, &pool, overload, &in_flight, &stop, &exit);
    let admitted = Admission::new(16, 1 << 20)
        .admit(Duration::ZERO)
        .await
        .unwrap();
    let (module, proxy) = UnixStream::pair().unwrap();
    let task = tokio::spawn(serve(Stream::unix(proxy), None, shared, admitted));
    Served {
        module,
        task,
        stop,
        _exit: exit,
    }
}

fn config() -> Config {
    Config::from_options(Options::default())
}

fn pre(msgid: u64) -> Vec<u8> {
    rpc::encode_request(msgid, rpc::PRE_REQUEST, &RPCMsgIn::default())
}

/// Reads until the proxy closes; the answers' msgids in arrival order.
async fn answers_until_closed(module: &mut UnixStream) -> Vec<u64> {
    let mut buf = Vec::new();
    module.read_to_end(&mut buf).await.unwrap();
    let mut ids = Vec::new();
    let mut rest = &buf[..];
    while let Some(len) = rpc::frame_len(rest, usize::MAX).unwrap() {
        let (id, _, _) = rpc::decode_response(&rest[..len]).unwrap();
        ids.push(id);
        rest = &rest[len..];
    }
    assert!(rest.is_empty(), "a partial answer");
    ids
}

/// Sends `bytes` on a fresh connection and leaves it: the answers' msgids and how long after
/// the proxy closed it.
async fn send_and_wait_for_close(bytes: &[u8]) -> (Vec<u64>, Duration) {
    let mut c = served(config()).await;
    c.module.write_all(bytes).await.unwrap();
    let started = tokio::time::Instant::now();
    let answered = answers_until_closed(&mut c.module).await;
    let after = started.elapsed();
    c.task.await.unwrap();
    (answered, after)
}

#[tokio::test(start_paused = true)]
async fn pipelined_calls_each_get_one_answer_with_their_own_msgid() {
    let mut c = served(config()).await;
    let mut pipelined = Vec::new();
    for id in [7, 3, 900] {
        pipelined.extend(pre(id));
    }
    c.module.write_all(&pipelined).await.unwrap();
    c.module.shutdown().await.unwrap(); // a half-close: the answers still come
    let mut ids = answers_until_closed(&mut c.module).await;
    ids.sort_unstable();
    assert_eq!(ids, [3, 7, 900]);
    c.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_frame_that_is_not_messagepack_closes_the_connection() {
    let mut c = served(config()).await;
    c.module.write_all(&[0xc1; 8]).await.unwrap();
    assert_eq!(answers_until_closed(&mut c.module).await, Vec::<u64>::new());
    c.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_frame_not_completed_within_the_frame_read_timeout_closes_the_connection() {
    let (answered, after) = send_and_wait_for_close(&pre(1)[..3]).await;
    assert_eq!(answered, Vec::<u64>::new());
    assert_eq!(after, config().frame_read_timeout);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closes_after_the_idle_timeout() {
    let (answered, after) = send_and_wait_for_close(&pre(1)).await;
    assert_eq!(answered, [1]);
    assert_eq!(after, config().idle_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_a_served_connection_at_once_and_answers_a_fresh_one() {
    // Served once, idle: closed as soon as the drain stops the connections.
    let mut served_once = served(config()).await;
    served_once.module.write_all(&pre(1)).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n = served_once.module.read(&mut answer).await.unwrap();
    assert!(n > 0);
    served_once.stop.cancel();
    assert_eq!(
        answers_until_closed(&mut served_once.module).await,
        Vec::<u64>::new()
    );

    // Accepted just before the drain, its request not yet sent: it still gets its answer.
    let mut fresh = served(config()).await;
    fresh.stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    fresh.module.write_all(&pre(2)).await.unwrap();
    assert_eq!(answers_until_closed(&mut fresh.module).await, [2]);
}

fn pre_with_body(msgid: u64, body: usize) -> Vec<u8> {
    let msg = RPCMsgIn {
        PostBody: "x".repeat(body),
        ..Default::default()
    };
    rpc::encode_request(msgid, rpc::PRE_REQUEST, &msg)
}

/// A frame shares the read buffer's allocation. After a large one the connection starts a fresh
/// buffer, so that the megabytes go with the frame (answered, dropped) instead of staying with
/// the connection while it is open, outside every budget; a small one keeps the buffer.
#[test]
fn a_large_frame_does_not_leave_its_allocation_with_the_connection() {
    let mut at = Progress::new(Limits::default());
    at.buf.extend_from_slice(&pre(1));
    let small = at.buf.capacity();
    assert!(at.next_frame().unwrap().is_some());
    assert!(at.buf.capacity() + pre(1).len() >= small, "kept");

    for pipelined in [false, true] {
        let mut at = Progress::new(Limits::default());
        at.buf.extend_from_slice(&pre_with_body(2, 1 << 20));
        if pipelined {
            // A small frame arrives behind the large one: the buffer is replaced once empty.
            at.buf.extend_from_slice(&pre(3));
        }
        let large = at.next_frame().unwrap().expect("a frame");
        if pipelined {
            assert!(at.next_frame().unwrap().is_some());
        }
        assert!(at.buf.is_empty());
        assert!(at.buf.capacity() <= BUF_KEEP, "{}", at.buf.capacity());
        // The large frame is whole and still readable: it owns the allocation now.
        assert!(large.as_bytes().len() > 1 << 20);
        assert_eq!(large.msgid(), Some(2));
    }
}
