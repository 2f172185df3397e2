//! The agent simulator speaks the module protocol correctly: every method, pipelining with
//! out-of-order answers, unknown methods, update bookkeeping and malformed input.

use std::time::Duration;

use simulator::addr::RpcAddr;
use simulator::agent::{SERVICE_TIME_HEADER, SimAgent};
use simulator::rpc::{self, RPCMsgIn, RPCMsgIn2, RPCMsgOut, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(agent: &SimAgent) -> TcpStream {
    let RpcAddr::Tcp(a) = agent.rpc_addr() else {
        panic!("tcp")
    };
    TcpStream::connect(a.as_str()).await.unwrap()
}

/// Reads one whole response frame.
async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u64, Option<String>, Reply)> {
    loop {
        if let Some(n) = rpc::frame_len(buf, rpc::MAX_FRAME_BYTES).unwrap() {
            let frame: Vec<u8> = buf.drain(..n).collect();
            return Some(rpc::decode_response(&frame).unwrap());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn call(agent: &SimAgent, frame: Vec<u8>) -> (u64, Option<String>, Reply) {
    let mut s = connect(agent).await;
    s.write_all(&frame).await.unwrap();
    read_frame(&mut s, &mut Vec::new()).await.unwrap()
}

fn pre(uri: &str) -> RPCMsgIn {
    RPCMsgIn {
        URI: uri.into(),
        Method: "GET".into(),
        ..Default::default()
    }
}

fn out(r: Reply) -> RPCMsgOut {
    match r {
        Reply::Out(o) => o,
        other => panic!("expected a result map, got {other:?}"),
    }
}

#[tokio::test]
async fn each_method_gets_the_answer_a_module_expects() {
    let agent = SimAgent::builder().spawn().await.unwrap();

    let (id, err, r) = call(
        &agent,
        rpc::encode_request(1, rpc::MODULE_INIT, &RPCMsgIn::default()),
    )
    .await;
    assert_eq!((id, err), (1, None));
    assert_eq!(out(r).WAFResponse, 200);

    let (id, err, r) = call(
        &agent,
        rpc::encode_request(2, rpc::PRE_REQUEST, &pre("/index.html")),
    )
    .await;
    let o = out(r);
    assert_eq!(
        (id, err, o.WAFResponse, o.RequestID.as_str()),
        (2, None, 200, "")
    );

    let mut attack = pre("/search");
    attack
        .HeadersIn
        .push(("Referer".into(), "x' OR 1=1 --".into()));
    let (_, _, r) = call(&agent, rpc::encode_request(3, rpc::PRE_REQUEST, &attack)).await;
    let o = out(r);
    assert_eq!(o.WAFResponse, 406);
    assert!(!o.RequestID.is_empty());
    assert!(
        o.RequestHeaders
            .contains(&("X-SigSci-Tags".into(), "SQLI".into())),
        "{:?}",
        o.RequestHeaders
    );

    let upd = RPCMsgIn2 {
        RequestID: o.RequestID,
        ResponseCode: 406,
        ..Default::default()
    };
    let (id, err, r) = call(&agent, rpc::encode_request(4, rpc::UPDATE_REQUEST, &upd)).await;
    assert_eq!((id, err, r), (4, None, Reply::Int(0)));

    let (id, err, r) = call(
        &agent,
        rpc::encode_request(5, rpc::POST_REQUEST, &pre("/slow")),
    )
    .await;
    assert_eq!((id, err, r), (5, None, Reply::Int(0)));

    let s = agent.shutdown().await;
    assert_eq!(
        (
            s.moduleinits,
            s.prerequests,
            s.updaterequests,
            s.postrequests
        ),
        (1, 2, 1, 1)
    );
    assert_eq!((s.blocked, s.updates_matched, s.connections), (1, 1, 5));
}

#[tokio::test]
async fn pipelined_requests_are_answered_out_of_order_with_their_own_msgids() {
    let agent = SimAgent::builder().workers(4).spawn().await.unwrap();
    let mut slow_attack = pre("/a?<script>");
    slow_attack
        .HeadersIn
        .push((SERVICE_TIME_HEADER.into(), "300000".into()));
    let mut fast = pre("/b");
    fast.HeadersIn
        .push((SERVICE_TIME_HEADER.into(), "0".into()));
    let mut bytes = rpc::encode_request(70000, rpc::PRE_REQUEST, &slow_attack);
    bytes.extend(rpc::encode_request(9, rpc::PRE_REQUEST, &fast));
    let mut s = connect(&agent).await;
    s.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let (first, _, r1) = read_frame(&mut s, &mut buf).await.unwrap();
    let (second, _, r2) = read_frame(&mut s, &mut buf).await.unwrap();
    assert_eq!(
        (first, out(r1).WAFResponse),
        (9, 200),
        "the fast request is answered first"
    );
    assert_eq!((second, out(r2).WAFResponse), (70000, 406));
    agent.shutdown().await;
}

#[tokio::test]
async fn unknown_method_gets_an_error_response_and_the_connection_stays_usable() {
    let agent = SimAgent::builder().spawn().await.unwrap();
    let mut s = connect(&agent).await;
    let mut buf = Vec::new();
    s.write_all(&rpc::encode_request(7, "RPC.Bogus", &RPCMsgIn::default()))
        .await
        .unwrap();
    let (id, err, _) = read_frame(&mut s, &mut buf).await.unwrap();
    assert_eq!(id, 7);
    assert!(err.unwrap().contains("RPC.Bogus"));
    // A notification is ignored, then a normal call works on the same connection.
    let notification = rmp_serde::to_vec(&(2u8, "RPC.Ping", [()])).unwrap();
    s.write_all(&notification).await.unwrap();
    s.write_all(&rpc::encode_request(8, rpc::PRE_REQUEST, &pre("/")))
        .await
        .unwrap();
    let (id, err, r) = read_frame(&mut s, &mut buf).await.unwrap();
    assert_eq!((id, err, out(r).WAFResponse), (8, None, 200));
    let stats = agent.shutdown().await;
    assert_eq!(
        (stats.unknown_methods, stats.notifications, stats.malformed),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn updates_are_booked_as_matched_orphaned_or_expired() {
    let agent = SimAgent::builder()
        .context_expiration(Duration::from_millis(500))
        .spawn()
        .await
        .unwrap();
    let issue = || async {
        let (_, _, r) = call(
            &agent,
            rpc::encode_request(1, rpc::PRE_REQUEST, &pre("/<script>")),
        )
        .await;
        out(r).RequestID
    };
    let update = |id: String| {
        let agent = &agent;
        async move {
            let u = RPCMsgIn2 {
                RequestID: id,
                ..Default::default()
            };
            call(agent, rpc::encode_request(2, rpc::UPDATE_REQUEST, &u)).await
        }
    };
    let first = issue().await;
    let late = issue().await;
    let never_updated = issue().await;
    update(first.clone()).await;
    update("not-issued-here".into()).await;
    update(first).await; // a second update for the same ID is no longer pending here
    tokio::time::sleep(Duration::from_millis(1200)).await;
    update(late).await;
    let s = agent.shutdown().await;
    assert_eq!(s.updates_matched, 1);
    assert_eq!(s.updates_orphaned, 2);
    assert_eq!(s.updates_expired, 1);
    assert_eq!(s.contexts_expired, 2, "late and never_updated expired");
    assert_eq!(s.pending, 0);
    drop(never_updated);
}

#[tokio::test]
async fn malformed_input_is_counted_and_does_not_stop_the_server() {
    let agent = SimAgent::builder().spawn().await.unwrap();
    for garbage in [
        vec![0xc1u8, 1, 2, 3],
        rmp_serde::to_vec(&"just a string").unwrap(),
        rmp_serde::to_vec(&(0u8, 1u8)).unwrap(),
    ] {
        let mut s = connect(&agent).await;
        s.write_all(&garbage).await.unwrap();
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(
            r.is_err() || rest.is_empty(),
            "the connection is closed without an answer"
        );
    }
    let (id, err, r) = call(&agent, rpc::encode_request(3, rpc::PRE_REQUEST, &pre("/"))).await;
    assert_eq!((id, err, out(r).WAFResponse), (3, None, 200));
    let s = agent.shutdown().await;
    assert_eq!(s.malformed, 3);
}

#[tokio::test]
async fn faults_refuse_and_reset_connections_on_command() {
    use simulator::agent::Faults;
    let agent = SimAgent::builder().spawn().await.unwrap();
    let RpcAddr::Tcp(addr) = agent.rpc_addr().clone() else {
        panic!()
    };
    agent.set_faults(Faults {
        refuse: true,
        slow: 1.0,
        ..Faults::default()
    });
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr.as_str()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "connections are refused while the refuse fault is on"
    );
    agent.set_faults(Faults {
        reset: true,
        slow: 1.0,
        ..Faults::default()
    });
    let mut s = loop {
        if let Ok(s) = TcpStream::connect(addr.as_str()).await {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    s.write_all(&rpc::encode_request(1, rpc::PRE_REQUEST, &pre("/")))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "no answer on a reset connection");
    assert_eq!(
        r.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    agent.set_faults(Faults {
        slow: 1.0,
        ..Faults::default()
    });
    let (id, err, _) = call(&agent, rpc::encode_request(2, rpc::PRE_REQUEST, &pre("/"))).await;
    assert_eq!((id, err), (2, None));
    agent.shutdown().await;
}

#[tokio::test]
async fn padded_answers_and_a_kill_that_frees_the_address_at_once() {
    use simulator::agent::PADDING_HEADER;
    let agent = SimAgent::builder()
        .answer_padding(100_000)
        .spawn()
        .await
        .unwrap();
    let addr = agent.tcp_addr().expect("a TCP agent");
    let (_, err, r) = call(&agent, rpc::encode_request(1, rpc::PRE_REQUEST, &pre("/"))).await;
    assert_eq!(err, None);
    let o = out(r);
    let pad = o.RequestHeaders.iter().find(|(k, _)| k == PADDING_HEADER);
    assert_eq!(pad.map(|(_, v)| v.len()), Some(100_000));

    // A connection held open with a request that never gets its answer (5 s of delay).
    agent.set_faults(simulator::agent::Faults {
        delay: Duration::from_secs(5),
        slow: 1.0,
        ..Default::default()
    });
    let mut held = connect(&agent).await;
    held.write_all(&rpc::encode_request(2, rpc::PRE_REQUEST, &pre("/")))
        .await
        .unwrap();
    let sent = std::time::Instant::now();
    while agent.stats().prerequests < 2 {
        assert!(sent.elapsed() < Duration::from_secs(10), "never received");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let stats = agent.kill().await;
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    assert_eq!((stats.prerequests, stats.responses), (2, 1));
    assert_eq!(
        read_frame(&mut held, &mut Vec::new()).await,
        None,
        "dropped unanswered"
    );
    // The address is free again: an agent restarted on it.
    let again = SimAgent::builder()
        .listen(addr.into())
        .spawn()
        .await
        .unwrap();
    assert_eq!(again.tcp_addr(), Some(addr));
    again.shutdown().await;
}
