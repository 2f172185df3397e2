//! Every module's decoder accepts every answer, and no agent gets an UpdateRequest it
//! cannot know.
//!
//! PHP's bundled `msgpack.php` (used when the msgpack C extension is missing) decodes `fixstr`,
//! `str16` and `str32` but not `str8`. An agent's answer it can decode must stay decodable
//! through the proxy, whose affinity suffix lengthens the RequestID. The agents here are raw
//! fakes that write their RequestIDs with a chosen header: 24 hex characters (the real agents'
//! form) in a `fixstr`, a 36-character UUID in a `str16` as an encoder that predates `str8`
//! does.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;
use sigsci_proxy::affinity;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A decoded MessagePack value, as much as the test needs.
#[derive(Debug, PartialEq)]
enum Value {
    Nil,
    Int(i64),
    Str(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// A decoder that, like `msgpack.php`, knows `fixstr`, `str16` and `str32` but not `str8`.
fn decode_without_str8(buf: &mut &[u8]) -> Result<Value, String> {
    let take = |buf: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if buf.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head.to_vec())
    };
    let be = |b: Vec<u8>| b.iter().fold(0u64, |n, &x| (n << 8) | u64::from(x));
    let marker = take(buf, 1)?[0];
    let items = |buf: &mut &[u8], n: usize| -> Result<Vec<Value>, String> {
        (0..n).map(|_| decode_without_str8(buf)).collect()
    };
    Ok(match marker {
        0x00..=0x7f => Value::Int(i64::from(marker)),
        0xe0..=0xff => Value::Int(i64::from(marker as i8)),
        0xc0 => Value::Nil,
        0xcc => Value::Int(be(take(buf, 1)?) as i64),
        0xcd => Value::Int(be(take(buf, 2)?) as i64),
        0xce => Value::Int(be(take(buf, 4)?) as i64),
        0xcf => Value::Int(be(take(buf, 8)?) as i64),
        0xd0 => Value::Int(i64::from(take(buf, 1)?[0] as i8)),
        0xd1 => Value::Int(i64::from(be(take(buf, 2)?) as u16 as i16)),
        0xd2 => Value::Int(i64::from(be(take(buf, 4)?) as u32 as i32)),
        0xa0..=0xbf => Value::Str(take(buf, usize::from(marker & 0x1f))?),
        0xd9 => return Err("str8 (0xd9) is unknown to this decoder".into()),
        0xda => {
            let n = be(take(buf, 2)?) as usize;
            Value::Str(take(buf, n)?)
        }
        0xdb => {
            let n = be(take(buf, 4)?) as usize;
            Value::Str(take(buf, n)?)
        }
        0x90..=0x9f => Value::Array(items(buf, usize::from(marker & 0x0f))?),
        0x80..=0x8f => {
            let kv = items(buf, 2 * usize::from(marker & 0x0f))?;
            let mut it = kv.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
        other => return Err(format!("marker {other:#04x} not needed by this test")),
    })
}

/// The RequestID of an answer `[1, msgid, nil, {.., RequestID: s, ..}]` decoded without str8.
fn request_id_without_str8(frame: &[u8]) -> Result<Vec<u8>, String> {
    let mut rd = frame;
    let Value::Array(mut items) = decode_without_str8(&mut rd)? else {
        return Err("not an array".into());
    };
    let Some(Value::Map(result)) = items.pop() else {
        return Err(format!("no result map: {items:?}"));
    };
    result
        .into_iter()
        .find_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Str(v)) if k == b"RequestID" => Some(v),
            _ => None,
        })
        .ok_or_else(|| "no RequestID".into())
}

/// A string header as an encoder without `str8` writes it.
fn old_spec_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 32 {
        out.push(0xa0 | s.len() as u8);
    } else {
        out.push(0xda);
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(s);
}

/// A fake agent issuing RequestIDs of one length and recording the UpdateRequests it gets.
struct FakeAgent {
    addr: SocketAddr,
    issued: Arc<Mutex<Vec<Vec<u8>>>>,
    updates: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl FakeAgent {
    async fn start(id_len: usize) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issued = Arc::new(Mutex::new(Vec::new()));
        let updates = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(u64::from(addr.port()) << 32));
        let (i, u) = (issued.clone(), updates.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (i, u, next) = (i.clone(), u.clone(), next.clone());
                tokio::spawn(serve(s, id_len, i, u, next));
            }
        });
        FakeAgent {
            addr,
            issued,
            updates,
        }
    }
}

/// The fake agent's side of one connection.
async fn serve(
    mut s: TcpStream,
    id_len: usize,
    issued: Arc<Mutex<Vec<Vec<u8>>>>,
    updates: Arc<Mutex<Vec<Vec<u8>>>>,
    next: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    while let Some(frame) = read_frame(&mut s, &mut buf).await {
        let Ok(rpc::Envelope::Request {
            msgid,
            method,
            params,
        }) = rpc::envelope(&frame)
        else {
            return;
        };
        let mut out = vec![0x94, 0x01];
        out.extend_from_slice(&[0xcf]);
        out.extend_from_slice(&msgid.to_be_bytes());
        out.push(0xc0);
        if method == rpc::UPDATE_REQUEST {
            let p: RPCMsgIn2 = rpc::decode_params(params).unwrap();
            updates.lock().unwrap().push(p.RequestID.into_bytes());
            out.push(0x00);
        } else {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let hex = format!("{n:024x}{n:024x}");
            let id = hex.as_bytes()[..id_len].to_vec();
            issued.lock().unwrap().push(id.clone());
            out.extend_from_slice(&[0x82]);
            old_spec_str(&mut out, b"WAFResponse");
            out.extend_from_slice(&[0xcd, 0x01, 0x96]);
            old_spec_str(&mut out, b"RequestID");
            old_spec_str(&mut out, &id);
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// One call on a connection of its own; the raw answer.
async fn call_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_frame(&mut s, &mut Vec::new())
        .await
        .expect("an answer")
}

fn pre_request_frame() -> Vec<u8> {
    rpc::encode_request(7, rpc::PRE_REQUEST, &pre_request())
}

fn update_frame(id: &[u8]) -> Vec<u8> {
    let params = RPCMsgIn2 {
        RequestID: String::from_utf8(id.to_vec()).unwrap(),
        ResponseCode: 406,
        ..Default::default()
    };
    rpc::encode_request(8, rpc::UPDATE_REQUEST, &params)
}

/// 60 flagged requests through a proxy in front of three agents issuing `id_len`-character
/// IDs: every answer decodes without str8, every ID keeps its header class, and every update
/// reaches the agent that issued its ID, with the ID it issued.
async fn through_the_proxy_without_str8(id_len: usize) {
    let agents = [
        FakeAgent::start(id_len).await,
        FakeAgent::start(id_len).await,
        FakeAgent::start(id_len).await,
    ];
    // The decoder can read the agents' own answers: only the proxy can make it fail.
    let direct = call_raw(agents[0].addr, &pre_request_frame()).await;
    let id = request_id_without_str8(&direct).expect("the agent's own answer decodes");
    assert_eq!(id.len(), id_len);
    let proxy = start_proxy(sigsci_proxy::config::Options {
        agents: Some(agents.iter().map(|a| a.addr.to_string()).collect()),
        ..options()
    })
    .await;
    for _ in 0..60 {
        let answer = call_raw(proxy.rpc, &pre_request_frame()).await;
        let tagged = request_id_without_str8(&answer)
            .unwrap_or_else(|e| panic!("{e}: {:02x?}", &answer[..answer.len().min(64)]));
        assert_eq!(
            affinity::class_capacity(tagged.len()),
            affinity::class_capacity(id_len),
            "{}",
            String::from_utf8_lossy(&tagged)
        );
        let (original, _) = affinity::decode(&tagged).expect("tagged");
        assert_eq!(original.len(), id_len);
        let answer = call_raw(proxy.rpc, &update_frame(&tagged)).await;
        assert_eq!(answer, [0x94, 0x01, 0x08, 0xc0, 0x00]);
    }
    let mut updates = 0;
    for a in &agents {
        let (issued, got) = (a.issued.lock().unwrap(), a.updates.lock().unwrap());
        assert!(
            got.iter().all(|id| issued.contains(id)),
            "an update reached an agent that did not issue its ID"
        );
        updates += got.len();
    }
    assert_eq!(updates, 60);
    proxy.stop().await;
}

#[tokio::test]
async fn a_decoder_without_str8_reads_every_answer_for_24_character_ids() {
    through_the_proxy_without_str8(24).await;
}

#[tokio::test]
async fn a_decoder_without_str8_reads_every_answer_for_36_character_ids() {
    through_the_proxy_without_str8(36).await;
}

#[tokio::test]
async fn an_update_tagged_by_the_previous_release_reaches_its_agent() {
    // The previous release appended the 16-byte suffix whatever the ID's length; a replica of
    // it tagged these IDs before the rolling upgrade reached this one.
    let agents = [FakeAgent::start(24).await, FakeAgent::start(24).await];
    let proxy = start_proxy(sigsci_proxy::config::Options {
        agents: Some(agents.iter().map(|a| a.addr.to_string()).collect()),
        ..options()
    })
    .await;
    for (i, a) in agents.iter().enumerate() {
        let original = format!("{:024x}", 0xabc0 + i);
        let token = agent_pool::AffinityToken::of(&agent_pool::EndpointId::new(a.addr.to_string()));
        let tagged = affinity::encode_full(original.as_bytes(), token);
        assert_eq!(tagged.len(), 40, "as the previous release wrote it: a str8");
        let answer = call_raw(proxy.rpc, &update_frame(&tagged)).await;
        assert_eq!(answer, [0x94, 0x01, 0x08, 0xc0, 0x00]);
        assert_eq!(*a.updates.lock().unwrap(), vec![original.into_bytes()]);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_update_whose_token_names_no_agent_is_answered_by_the_proxy_and_sent_nowhere() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    // The token names an agent this proxy has never had: gone past --gone-grace, or forged.
    // Sending it to a random agent instead would hand that agent an ID it cannot know.
    let (a, b) = (Agent::start().await, Agent::start().await);
    let proxy = alone.start_proxy(with_agents(&[&a, &b])).await;
    let lost = r#"sigsci_proxy_affinity_total{result="lost"}"#;
    let lost_before = metric(proxy.admin, lost).await;
    let stranger = agent_pool::AffinityToken::of(&agent_pool::EndpointId::new("gone-agent"));
    for tagged in [
        affinity::encode_full(b"0123456789abcdef01234567", stranger),
        affinity::encode_short(b"0123456789abcdef01234567", stranger.short()),
    ] {
        let answer = call_raw(proxy.rpc, &update_frame(&tagged)).await;
        assert_eq!(
            answer,
            [0x94, 0x01, 0x08, 0xc0, 0x00],
            "as an agent answers"
        );
    }
    assert_eq!(a.stats().updaterequests + b.stats().updaterequests, 0);
    assert_eq!(metric(proxy.admin, lost).await - lost_before, 2.0);
    // An UpdateRequest without a token still goes to an agent (it may have come from one
    // directly).
    assert_eq!(update(proxy.rpc, "plain-id").await, None);
    assert_eq!(a.stats().updaterequests + b.stats().updaterequests, 1);
    proxy.stop().await;
}
