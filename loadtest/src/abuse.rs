//! Clients that misbehave beside the good traffic, for the `bad-clients` and `conn-flood` steps:
//! invalid frames, slow writers (a valid frame a byte at a time), clients that pipeline requests
//! and never read, and idle connections far beyond the front's connection limit. Every loop is
//! bounded in time (`duration`) and count; they report what the front did to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::rpc::{self, RPCMsgIn};

/// Outcomes by client kind, then by what happened: counts.
type Outcomes = Arc<Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>>;

fn note(o: &Outcomes, kind: &'static str, what: impl Into<String>) {
    *o.lock()
        .expect("not poisoned")
        .entry(kind)
        .or_default()
        .entry(what.into())
        .or_default() += 1;
}

fn render(o: &Outcomes) -> String {
    o.lock()
        .expect("not poisoned")
        .iter()
        .map(|(kind, m)| {
            let parts: Vec<String> = m.iter().map(|(w, n)| format!("{w} {n}")).collect();
            format!("{kind}: {}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the peer did after we wrote: answered (error frame or not), closed, reset, or nothing
/// within `wait`.
async fn outcome(s: &mut TcpStream, wait: Duration) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let r = timeout(wait, async {
        loop {
            if let Ok(Some(n)) = rpc::frame_len(&buf, rpc::MAX_FRAME_BYTES) {
                return match rpc::decode_response(&buf[..n]) {
                    Ok((_, Some(_), _)) => "error frame".to_string(),
                    Ok((_, None, _)) => "answered".to_string(),
                    Err(_) => "unparsable answer".to_string(),
                };
            }
            match s.read(&mut chunk).await {
                Ok(0) => return "closed".to_string(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return "reset".to_string();
                }
                Err(e) => return format!("read error {:?}", e.kind()),
            }
        }
    })
    .await;
    r.unwrap_or_else(|_| "no answer".to_string())
}

fn good_pre(msgid: u64, body: usize) -> Vec<u8> {
    rpc::encode_request(
        msgid,
        rpc::PRE_REQUEST,
        &RPCMsgIn {
            Method: "POST".into(),
            URI: "/bad-client".into(),
            PostBody: "x".repeat(body),
            ..Default::default()
        },
    )
}

/// The invalid frames sent, in turn: a byte MessagePack never uses, a string instead of an
/// RPC array, a request array with a wrong shape, and a frame announcing 4 GiB.
fn invalid_frame(i: u64) -> Vec<u8> {
    match i % 4 {
        0 => vec![0xc1, 0x00, 0x01],
        1 => rmp_serde::to_vec(&"not an rpc").expect("encodes"),
        2 => rmp_serde::to_vec(&(0u8, 7u32, 42u8, ())).expect("encodes"),
        _ => vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
    }
}

/// The bad client kinds, as named in a `bad-clients` step's `query`.
pub(crate) const KINDS: [&str; 3] = ["invalid", "slow", "never-read"];

/// Runs `count` clients of each bad kind in `kinds` (all when empty) against `target` for
/// `duration`; returns a summary of what the front did to each.
pub(crate) async fn bad_clients(
    target: SocketAddr,
    count: usize,
    duration: Duration,
    kinds: &[String],
) -> String {
    let on = |k: &str| kinds.is_empty() || kinds.iter().any(|x| x == k);
    let o: Outcomes = Arc::default();
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..count {
        if on("invalid") {
            tasks.push(tokio::spawn(invalid_frames(
                target,
                c as u64,
                end,
                o.clone(),
            )));
        }
        if on("slow") {
            tasks.push(tokio::spawn(slow_writer(target, end, o.clone())));
        }
        if on("never-read") {
            tasks.push(tokio::spawn(never_reads(target, end, o.clone())));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    render(&o)
}

/// Invalid frames (from the `i`th on): a fresh connection each, at most one every 50 ms.
async fn invalid_frames(target: SocketAddr, mut i: u64, end: Instant, o: Outcomes) {
    while Instant::now() < end {
        match timeout(Duration::from_secs(1), TcpStream::connect(target)).await {
            Ok(Ok(mut s)) => {
                let _ = s.write_all(&invalid_frame(i)).await;
                note(
                    &o,
                    "invalid frame",
                    outcome(&mut s, Duration::from_millis(300)).await,
                );
            }
            _ => note(&o, "invalid frame", "connect failed"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slow writer: a valid PreRequest, one byte every 50 ms, until sent or the time is up.
async fn slow_writer(target: SocketAddr, end: Instant, o: Outcomes) {
    while Instant::now() + Duration::from_millis(200) < end {
        let Ok(Ok(mut s)) = timeout(Duration::from_secs(1), TcpStream::connect(target)).await
        else {
            note(&o, "slow writer", "connect failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let frame = good_pre(1, 0);
        let mut cut = None;
        for (k, b) in frame.iter().enumerate() {
            if Instant::now() >= end {
                break;
            }
            if s.write_all(&[*b]).await.is_err() {
                cut = Some(k);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let what = match cut {
            Some(k) => format!("cut after {k} bytes"),
            None if Instant::now() >= end => "time up".into(),
            None => outcome(&mut s, Duration::from_millis(500)).await,
        };
        note(&o, "slow writer", what);
    }
}

/// Never reads: a 4 KiB receive buffer (so the answers fill it after a few dozen), then
/// PreRequests without a body, one per 10 ms, at most 1,000, never reading an answer.
async fn never_reads(target: SocketAddr, end: Instant, o: Outcomes) {
    let connect = async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.set_recv_buffer_size(4096)?;
        sock.connect(target).await
    };
    let Ok(Ok(mut s)) = timeout(Duration::from_secs(1), connect).await else {
        note(&o, "never reads", "connect failed");
        return;
    };
    let mut sent = 0u64;
    let mut stuck = false;
    for msgid in 0..1_000u64 {
        if Instant::now() >= end {
            break;
        }
        match timeout(Duration::from_millis(200), s.write_all(&good_pre(msgid, 0))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => {
                stuck = true;
                // Writes blocked: the front stopped reading us; hold the connection.
                tokio::time::sleep_until(end).await;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bucket = match sent {
        0..=9 => "<10",
        10..=99 => "10-99",
        100..=999 => "100-999",
        _ => "1000",
    };
    let blocked = if stuck {
        "writes blocked"
    } else {
        "not blocked"
    };
    note(
        &o,
        "never reads",
        format!("{blocked} after {bucket} requests"),
    );
}

/// Opens up to `count` idle connections to `target` (a burst of 50 every 10 ms), holds them
/// for `duration`, then reports how many opened and how many the front closed or reset meanwhile.
pub(crate) async fn conn_flood(target: SocketAddr, count: usize, duration: Duration) -> String {
    let end = Instant::now() + duration;
    let mut conns = Vec::with_capacity(count);
    let mut failed = 0u64;
    for batch in (0..count).collect::<Vec<_>>().chunks(50) {
        if Instant::now() >= end {
            break;
        }
        let opened = futures::future::join_all(
            batch
                .iter()
                .map(|_| timeout(Duration::from_secs(1), TcpStream::connect(target))),
        )
        .await;
        for r in opened {
            match r {
                Ok(Ok(s)) => conns.push(s),
                _ => failed += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened = conns.len();
    tokio::time::sleep_until(end).await;
    let o: Outcomes = Arc::default();
    let checks = conns.into_iter().map(|mut s| {
        let o = o.clone();
        async move {
            let what = outcome(&mut s, Duration::from_millis(1)).await;
            note(
                &o,
                "idle",
                if what == "no answer" {
                    "still open".into()
                } else {
                    what
                },
            );
        }
    });
    futures::future::join_all(checks).await;
    format!(
        "{opened} of {count} idle connections opened ({failed} failed); at the end: {}",
        render(&o)
    )
}
