//! The simulator judges requests as an agent does (decoded URIs and form bodies, strings as
//! bytes), and has the fault and startup modes the scenarios need: error frames, stalls, and a
//! startup probe that answers 503 until the startup delay has passed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use simulator::addr::RpcAddr;
use simulator::agent::{Faults, INJECTED_ERROR, SimAgent};
use simulator::rpc::{self, RPCMsgIn, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(agent: &SimAgent) -> TcpStream {
    let RpcAddr::Tcp(a) = agent.rpc_addr() else {
        panic!("tcp")
    };
    TcpStream::connect(a.as_str()).await.unwrap()
}

/// Writes `frame`, reads one answer (or `None` if none came within `wait`).
async fn call_within(
    agent: &SimAgent,
    frame: &[u8],
    wait: Duration,
) -> Option<(u64, Option<String>, Reply)> {
    let mut s = connect(agent).await;
    s.write_all(frame).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(n) = rpc::frame_len(&buf, rpc::MAX_FRAME_BYTES).unwrap() {
                return Some(rpc::decode_response(&buf[..n]).unwrap());
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

async fn call(agent: &SimAgent, frame: &[u8]) -> (u64, Option<String>, Reply) {
    call_within(agent, frame, Duration::from_secs(10))
        .await
        .expect("an answer")
}

fn waf(r: Reply) -> i32 {
    match r {
        Reply::Out(o) => o.WAFResponse,
        other => panic!("expected a result map, got {other:?}"),
    }
}

fn pre(uri: &str) -> Vec<u8> {
    rpc::encode_request(
        1,
        rpc::PRE_REQUEST,
        &RPCMsgIn {
            URI: uri.into(),
            Method: "GET".into(),
            ..Default::default()
        },
    )
}

/// A PreRequest whose URI and body are MessagePack strings holding arbitrary bytes.
fn pre_raw(msgid: u32, uri: &[u8], headers: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    use rmp::encode::{write_array_len, write_map_len, write_str, write_str_len, write_uint};
    let raw = |buf: &mut Vec<u8>, b: &[u8]| {
        write_str_len(buf, b.len() as u32).unwrap();
        buf.extend_from_slice(b);
    };
    let mut buf = Vec::new();
    write_array_len(&mut buf, 4).unwrap();
    write_uint(&mut buf, 0).unwrap();
    write_uint(&mut buf, u64::from(msgid)).unwrap();
    write_str(&mut buf, rpc::PRE_REQUEST).unwrap();
    write_array_len(&mut buf, 1).unwrap();
    write_map_len(&mut buf, 4).unwrap();
    write_str(&mut buf, "Method").unwrap();
    write_str(&mut buf, "POST").unwrap();
    write_str(&mut buf, "URI").unwrap();
    raw(&mut buf, uri);
    write_str(&mut buf, "HeadersIn").unwrap();
    write_array_len(&mut buf, headers.len() as u32).unwrap();
    for (k, v) in headers {
        write_array_len(&mut buf, 2).unwrap();
        raw(&mut buf, k);
        raw(&mut buf, v);
    }
    write_str(&mut buf, "PostBody").unwrap();
    raw(&mut buf, body);
    buf
}

#[tokio::test]
async fn url_encoded_script_in_path_or_query_is_blocked_like_the_literal() {
    let agent = SimAgent::builder().spawn().await.unwrap();
    for uri in [
        "/?q=<script>",
        "/?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "/?q=%3cSCRIPT%3e",
        "/search%3Cscript%3E/x",
        "/?q=%27+OR+1%3D1",
    ] {
        let (_, err, r) = call(&agent, &pre(uri)).await;
        assert_eq!((err, waf(r)), (None, 406), "{uri}");
    }
    for uri in ["/?q=script", "/?q=%3C%20script", "/a+b?q=%zz"] {
        let (_, err, r) = call(&agent, &pre(uri)).await;
        assert_eq!((err, waf(r)), (None, 200), "{uri}");
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn urlencoded_form_bodies_are_decoded_other_bodies_are_not() {
    let agent = SimAgent::builder().spawn().await.unwrap();
    let form: &[(&[u8], &[u8])] = &[(b"Content-Type", b"application/x-www-form-urlencoded")];
    let (_, err, r) = call(&agent, &pre_raw(1, b"/f", form, b"a=1&c=%3Cscript%3E")).await;
    assert_eq!((err, waf(r)), (None, 406));
    let text: &[(&[u8], &[u8])] = &[(b"Content-Type", b"text/plain")];
    let (_, err, r) = call(&agent, &pre_raw(2, b"/f", text, b"a=1&c=%3Cscript%3E")).await;
    assert_eq!((err, waf(r)), (None, 200));
    agent.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_is_inspected_as_bytes_never_answered_with_an_error() {
    let agent = SimAgent::builder().spawn().await.unwrap();
    let (_, err, r) = call(&agent, &pre_raw(1, b"/\xff\xfe<script>", &[], b"")).await;
    assert_eq!((err, waf(r)), (None, 406), "attack next to invalid UTF-8");
    let (_, err, r) = call(
        &agent,
        &pre_raw(2, b"/\xc3(", &[(b"X-A", b"\xff")], b"\x80"),
    )
    .await;
    assert_eq!((err, waf(r)), (None, 200), "invalid UTF-8, no attack");
    let (_, err, r) = call(
        &agent,
        &pre_raw(3, b"/?q=%3Cscript%3E%ff", &[(b"X", b"\xff")], b""),
    )
    .await;
    assert_eq!((err, waf(r)), (None, 406), "escaped attack and bytes");
    let s = agent.shutdown().await;
    assert_eq!((s.bad_params, s.blocked), (0, 2));
}

#[tokio::test]
async fn error_fault_answers_every_call_at_once_with_an_error_frame() {
    let agent = SimAgent::builder()
        .admin("127.0.0.1:0".parse().unwrap())
        .service_time(simulator::units::ServiceTime::Fixed(Duration::from_millis(
            50,
        )))
        .faults(Faults {
            error: true,
            slow: 1.0,
            ..Faults::default()
        })
        .spawn()
        .await
        .unwrap();
    let t0 = Instant::now();
    let (id, err, _) = call(&agent, &pre("/")).await;
    assert_eq!((id, err.as_deref()), (1, Some(INJECTED_ERROR)));
    assert!(t0.elapsed() < Duration::from_millis(40), "no service time");
    let update = rpc::encode_request(
        9,
        rpc::UPDATE_REQUEST,
        &rpc::RPCMsgIn2 {
            RequestID: "x".into(),
            ..Default::default()
        },
    );
    let (id, err, _) = call(&agent, &update).await;
    assert_eq!((id, err.as_deref()), (9, Some(INJECTED_ERROR)));
    // Off through the admin endpoint.
    let admin = agent.admin_addr().unwrap();
    simulator::http::post(admin, "/fault?error=0")
        .await
        .unwrap();
    let (_, err, r) = call(&agent, &pre("/")).await;
    assert_eq!((err, waf(r)), (None, 200));
    let s = agent.shutdown().await;
    assert_eq!(s.errors_answered, 2);
}

#[tokio::test]
async fn stall_fault_reads_and_never_answers_switched_by_the_admin_endpoint() {
    let agent = SimAgent::builder()
        .admin("127.0.0.1:0".parse().unwrap())
        .spawn()
        .await
        .unwrap();
    let admin = agent.admin_addr().unwrap();
    simulator::http::post(admin, "/fault?stall=1")
        .await
        .unwrap();
    let none = call_within(&agent, &pre("/"), Duration::from_millis(300)).await;
    assert!(none.is_none(), "a stalled agent never answers");
    simulator::http::post(admin, "/fault?stall=0")
        .await
        .unwrap();
    let (_, err, r) = call(&agent, &pre("/")).await;
    assert_eq!((err, waf(r)), (None, 200));
    let s = agent.shutdown_within(Duration::from_secs(2)).await;
    assert_eq!((s.stalled, s.responses), (1, 1));
}

async fn startup_status(probe: SocketAddr) -> u16 {
    simulator::http::call(
        probe,
        hyper::Method::GET,
        "/startup",
        Duration::from_secs(2),
    )
    .await
    .unwrap()
    .0
    .as_u16()
}

#[tokio::test]
async fn startup_probe_answers_503_until_the_delay_has_passed_while_rpcs_are_served() {
    let delay = Duration::from_millis(600);
    let agent = SimAgent::builder()
        .startup_delay(delay)
        .startup_probe("127.0.0.1:0".parse().unwrap())
        .spawn()
        .await
        .unwrap();
    let t0 = Instant::now();
    let probe = agent.startup_probe_addr().unwrap();
    assert_eq!(startup_status(probe).await, 503);
    // The RPC listener already serves (the real agent inspects before its rules are loaded).
    let (_, err, r) = call(&agent, &pre("/?q=<script>")).await;
    assert_eq!((err, waf(r)), (None, 406));
    tokio::time::sleep(delay.saturating_sub(t0.elapsed()) + Duration::from_millis(50)).await;
    assert_eq!(startup_status(probe).await, 200);
    assert!(agent.started());
    let s = agent.shutdown().await;
    assert_eq!(s.before_startup, 1);
}
