//! Fault containment, judged as the modules judge it: how many calls go uninspected (an error
//! frame, a reset or no answer) when one agent or one client misbehaves.

use std::time::{Duration, Instant};

use crate::support::*;
use sigsci_proxy::config::{Dur, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// PreRequests through `addr`, `n` in turn, a few at a time; returns how many failed.
async fn pre_requests(addr: std::net::SocketAddr, n: usize) -> usize {
    let mut failed = 0;
    for chunk in 0..n.div_ceil(4) {
        let calls = (0..4.min(n - chunk * 4)).map(|i| async move {
            let (_, err, _) = call(addr, i as u64, rpc::PRE_REQUEST, &pre_request()).await;
            err.is_some()
        });
        failed += futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|&e| e)
            .count();
    }
    failed
}

const RETRIES: &str = "sigsci_proxy_retries_total{result=\"attempted\"}";
const DEADLINE: &str = "sigsci_proxy_uninspected_total{reason=\"deadline\"}";
const INVALID: &str = "sigsci_proxy_uninspected_total{reason=\"invalid_frame\"}";
const FRAME_BUDGET: &str = "sigsci_proxy_uninspected_total{reason=\"frame_budget\"}";
const WRITE_TIMEOUT: &str = "sigsci_proxy_connections_closed_total{reason=\"write_timeout\"}";

#[tokio::test]
async fn an_agent_answering_errors_fast_gets_little_work_and_its_calls_are_retried() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let good = [Agent::start().await, Agent::start().await];
    let bad = Agent::with_faults(Faults {
        error: true,
        ..no_faults()
    })
    .await;
    let proxy = alone
        .start_proxy(with_agents(&[&good[0], &good[1], &bad]))
        .await;
    let retries = metric(proxy.admin, RETRIES).await;
    let failed = pre_requests(proxy.rpc, 400).await;
    let to_bad = bad.pre();
    // Before: the error agent drew 36–42 % of PreRequests and every one failed open.
    assert!(failed <= 4, "{failed} of 400 failed open (1 % allowed)");
    assert!(
        to_bad <= 20,
        "{to_bad} of 400 went to the error agent (5 % allowed)"
    );
    let agents = http(proxy.admin, "GET", "/agents").await.1;
    assert!(agents.contains("\"error_answers\""), "{agents}");
    assert!(metric(proxy.admin, RETRIES).await - retries >= 1.0);
    proxy.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_never_answers_costs_a_handful_of_calls() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let good = [Agent::start().await, Agent::start().await];
    let stalled = Agent::with_faults(Faults {
        stall: true,
        ..no_faults()
    })
    .await;
    let proxy = alone
        .start_proxy(Options {
            rpc_timeout: Some(Dur(Duration::from_millis(80))),
            connect_timeout: Some(Dur(Duration::from_millis(20))),
            ..with_agents(&[&good[0], &good[1], &stalled])
        })
        .await;
    let deadline = metric(proxy.admin, DEADLINE).await;
    let failed = pre_requests(proxy.rpc, 400).await;
    let agents = http(proxy.admin, "GET", "/agents").await.1;
    assert!(
        failed <= 4,
        "{failed} of 400 lost to the stalled agent: {agents}"
    );
    assert_eq!(
        (metric(proxy.admin, DEADLINE).await - deadline) as usize,
        failed,
        "every lost call is counted by reason"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_agent_restarted_on_its_address_is_back_within_a_second() {
    let other = Agent::start().await;
    let agent = Agent::start().await;
    let addr = agent.addr;
    let proxy = start_proxy(with_agents(&[&other, &agent])).await;
    pre_requests(proxy.rpc, 20).await;
    agent.kill().await;
    // Calls meanwhile: the dead agent is ejected (its failures are retried on `other`).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pre_requests(proxy.rpc, 40).await, 0);
    let (_, agents) = http(proxy.admin, "GET", "/agents").await;
    assert!(agents.contains("\"ejected\""), "{agents}");

    let back = Agent::spawn(agent_config().listen(addr.into())).await;
    let listening = Instant::now();
    while back.pre() == 0 {
        assert!(
            listening.elapsed() < Duration::from_millis(1500),
            "no PreRequest 1.5 s after the agent listened again"
        );
        pre_requests(proxy.rpc, 4).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_calls_are_answered_by_the_proxy_and_never_reach_an_agent() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let proxy = alone.start_proxy(with_agents(&[&agent])).await;
    let invalid = metric(proxy.admin, INVALID).await;
    let map = std::collections::BTreeMap::from([("URI", "/")]);
    let bad_params: Vec<Vec<u8>> = vec![
        rmp_serde::to_vec(&(0u8, 1u32, "RPC.PreRequest", ())).unwrap(), // params nil
        rmp_serde::to_vec(&(0u8, 2u32, "RPC.PreRequest", Vec::<u8>::new())).unwrap(),
        rmp_serde::to_vec(&(0u8, 3u32, "RPC.PreRequest", [1u8])).unwrap(),
        rmp_serde::to_vec(&(0u8, 4u32, "RPC.PreRequest", [&map, &map])).unwrap(),
        rmp_serde::to_vec(&(0u8, 5u32, "RPC.Shutdown", [&map])).unwrap(),
        rmp_serde::to_vec(&(1u8, 6u32, (), &map)).unwrap(), // a response
    ];
    for (i, frame) in bad_params.iter().enumerate() {
        let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
        s.write_all(frame).await.unwrap();
        let answer = read_frame(&mut s, &mut Vec::new()).await;
        if i == 0 {
            // nil params is not an RPC frame at all: the connection ends.
            assert_eq!(answer, None, "closed without an answer");
            continue;
        }
        let (msgid, err, _) = rpc::decode_response(&answer.expect("an answer")).unwrap();
        assert_eq!(msgid, i as u64 + 1);
        assert!(err.unwrap().contains("invalid call"));
    }
    // A notification has no msgid to answer: the connection is reset.
    let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
    s.write_all(&rmp_serde::to_vec(&(2u8, "RPC.PreRequest", [&map])).unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await;
    assert!(matches!(end, Ok(Ok(0) | Err(_))), "{end:?}");

    assert!(!pre(proxy.rpc).await.is_empty(), "good calls beside them");
    let stats = agent.stats();
    assert_eq!(
        (
            stats.unknown_methods,
            stats.bad_params,
            stats.notifications,
            stats.malformed
        ),
        (0, 0, 0, 0),
        "nothing invalid reached the agent"
    );
    assert_eq!(agent.pre(), 1);
    assert!(metric(proxy.admin, INVALID).await - invalid >= 6.0);
    proxy.stop().await;
}

/// A PreRequest frame whose URI carries `uri` byte for byte, and a body of `body` bytes.
fn raw_pre_request(msgid: u32, uri: &[u8], body: usize) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 4).unwrap();
    rmp::encode::write_uint(&mut out, 0).unwrap();
    rmp::encode::write_uint(&mut out, u64::from(msgid)).unwrap();
    rmp::encode::write_str(&mut out, "RPC.PreRequest").unwrap();
    rmp::encode::write_array_len(&mut out, 1).unwrap();
    rmp::encode::write_map_len(&mut out, 3).unwrap();
    rmp::encode::write_str(&mut out, "Method").unwrap();
    rmp::encode::write_str(&mut out, "POST").unwrap();
    rmp::encode::write_str(&mut out, "URI").unwrap();
    rmp::encode::write_str_len(&mut out, uri.len() as u32).unwrap();
    out.extend_from_slice(uri);
    rmp::encode::write_str(&mut out, "PostBody").unwrap();
    rmp::encode::write_str_len(&mut out, body as u32).unwrap();
    out.extend(std::iter::repeat_n(b'a', body));
    out
}

#[tokio::test]
async fn raw_bytes_and_large_requests_are_forwarded_not_judged() {
    let agent = Agent::start().await;
    let proxy = start_proxy(with_agents(&[&agent])).await;
    // Invalid UTF-8 next to an attack: a string's contents are the agent's business.
    for (msgid, frame) in [
        (1, raw_pre_request(1, b"/?q=<script>\xff\xfe", 10)),
        // 1.5 MB: over the old 1 MiB frame limit, which reset it.
        (2, raw_pre_request(2, b"/upload", 1_500_000)),
    ] {
        let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
        s.write_all(&frame).await.unwrap();
        let (id, err, _) = read_response(&mut s).await;
        assert_eq!(
            (id, err),
            (msgid, None),
            "forwarded and answered by the agent"
        );
    }
    let stats = agent.stats();
    assert_eq!(
        (stats.prerequests, stats.blocked),
        (2, 1),
        "the attack seen"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn partly_received_frames_past_the_budget_shed_the_largest_holders() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::start().await;
    let proxy = alone
        .start_proxy(Options {
            max_frame_bytes: Some(1 << 20),
            max_partial_bytes: Some(2 << 20),
            ..with_agents(&[&agent])
        })
        .await;
    let budget_shed = metric(proxy.admin, FRAME_BUDGET).await;
    // Ten connections each send 90 % of a 1 MiB frame and stall: 9 MiB against a 2 MiB budget.
    let frame = raw_pre_request(1, b"/", (1 << 20) - 200);
    let mut holders = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(proxy.rpc).await.unwrap();
        s.write_all(&frame[..frame.len() * 9 / 10]).await.unwrap();
        holders.push(s);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut shed = 0;
    for mut s in holders {
        let mut buf = [0u8; 16];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            assert!(matches!(r, Err(_) | Ok(0)), "shed with a reset or close");
            shed += 1;
        }
    }
    assert!(
        shed >= 8,
        "at most two 0.9 MB holders fit in 2 MiB: {shed} of 10 shed"
    );
    assert!(!pre(proxy.rpc).await.is_empty(), "good traffic beside them");
    assert!(metric(proxy.admin, FRAME_BUDGET).await - budget_shed >= 8.0);
    proxy.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_module_that_does_not_read_is_reset_after_the_write_timeout() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let agent = Agent::spawn(agent_config().answer_padding(256 << 10)).await;
    let proxy = alone
        .start_proxy(Options {
            write_timeout: Some(Dur(Duration::from_millis(200))),
            ..with_agents(&[&agent])
        })
        .await;
    let write_timeouts = metric(proxy.admin, WRITE_TIMEOUT).await;
    // Pipelined PreRequests whose 256 KiB answers it never reads, through a small receive
    // buffer: the answers fill both socket buffers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let s = socket.connect(proxy.rpc).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let one = rpc::encode_request(1, rpc::PRE_REQUEST, &pre_request());
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
        for _ in 0..5 {
            if wr.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    loop {
        if metric(proxy.admin, WRITE_TIMEOUT).await - write_timeouts >= 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never timed out"
        );
        // Another pod: calls from the never-reader's own address share its fair queue.
        assert!(
            !pre_from_another_pod(proxy.rpc).await.is_empty(),
            "others are served meanwhile"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.abort();
    let mut buf = vec![0u8; 1 << 16];
    // It ends in a reset (possibly after the answers already buffered).
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.kind()),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "a reset");
    proxy.stop().await;
}

#[tokio::test]
async fn an_agent_blip_does_not_make_the_proxy_unready() {
    let agent = Agent::start().await;
    let proxy = start_proxy(with_agents(&[&agent])).await;
    agent.kill().await;
    pre_requests(proxy.rpc, 10).await;
    let (status, _) = http(proxy.admin, "GET", "/readyz").await;
    assert_eq!(
        status, 200,
        "readiness is the drain latch, not agent health"
    );
    proxy.stop().await;
}
