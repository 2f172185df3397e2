//! Test fixtures: a tiny simulated agent that speaks the protocol (issues RequestIDs, counts
//! matched and orphaned UpdateRequests), a module-like client, and a proxy started in-process
//! with a shutdown the test owns.
#![allow(dead_code)]

pub mod process;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigsci_proxy::codec::{FrameCodec, FrameKind};
use sigsci_proxy::config::{Dur, ListenAddr, Options};
use sigsci_proxy::message::{self, RPCMsgIn, RPCMsgIn2, RPCMsgOut};
use sigsci_proxy::{Config, DrainReport, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// How a fixture agent behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Answers everything.
    Normal,
    /// Answers after a delay.
    Slow(Duration),
    /// Closes the connection when a PreRequest arrives, without answering.
    DropPreRequests,
    /// Answers every call at once with an error frame.
    ErrorAnswer,
    /// Accepts and reads, never answers.
    Stall,
    /// Answers PreRequests with this many bytes of request headers.
    LargeAnswers(usize),
}

/// What an agent saw.
#[derive(Default, Debug)]
pub struct Counters {
    pub connections: AtomicU64,
    pub pre: AtomicU64,
    pub init: AtomicU64,
    pub post: AtomicU64,
    pub other: AtomicU64,
    pub updates_matched: AtomicU64,
    pub updates_orphaned: AtomicU64,
}

/// A simulated agent on 127.0.0.1.
pub struct Agent {
    pub name: String,
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    stop: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Agent {
    pub async fn start(name: &str) -> Agent {
        Self::start_with(name, Behavior::Normal).await
    }

    pub async fn start_with(name: &str, behavior: Behavior) -> Agent {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, behavior).await
    }

    /// An agent on `addr` (an agent restarted on the address of one stopped before).
    pub async fn start_on(addr: SocketAddr, name: &str, behavior: Behavior) -> Agent {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let issued = Arc::new(Mutex::new(HashSet::new()));
        let stop = CancellationToken::new();
        let name = name.to_owned();
        {
            let (counters, stop, name) = (counters.clone(), stop.clone(), name.clone());
            tokio::spawn(async move {
                loop {
                    let stream = tokio::select! {
                        () = stop.cancelled() => return,
                        r = listener.accept() => r.unwrap().0,
                    };
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let ctx = (counters.clone(), issued.clone(), name.clone(), stop.clone());
                    tokio::spawn(serve_agent_conn(stream, ctx, behavior));
                }
            });
        }
        Agent {
            name,
            addr,
            counters,
            stop,
        }
    }

    pub fn pre(&self) -> u64 {
        get(&self.counters.pre)
    }
    pub fn matched(&self) -> u64 {
        get(&self.counters.updates_matched)
    }
    pub fn orphaned(&self) -> u64 {
        get(&self.counters.updates_orphaned)
    }
    pub fn connections(&self) -> u64 {
        get(&self.counters.connections)
    }
}

type Ctx = (
    Arc<Counters>,
    Arc<Mutex<HashSet<String>>>,
    String,
    CancellationToken,
);

async fn serve_agent_conn(stream: TcpStream, ctx: Ctx, behavior: Behavior) {
    let (counters, issued, name, stop) = ctx;
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, FrameCodec::default());
    // Requests on one connection are handled concurrently (as the Go agent's net/rpc server
    // does); a writer task serialises the answers.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            if wr.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            f = frames.next() => match f { Some(Ok(f)) => f, _ => break },
        };
        if frame.kind() != FrameKind::Request {
            counters.other.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let method = String::from_utf8_lossy(frame.method_name().unwrap_or_default()).into_owned();
        if method == message::PRE_REQUEST && behavior == Behavior::DropPreRequests {
            break;
        }
        if method == message::PRE_REQUEST {
            match behavior {
                Behavior::Stall => {
                    counters.pre.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Behavior::ErrorAnswer => {
                    counters.pre.fetch_add(1, Ordering::Relaxed);
                    let msgid = frame.msgid().unwrap();
                    let _ = tx.send(message::encode_response(msgid, Some("agent failure"), &()));
                    continue;
                }
                _ => {}
            }
        }
        let (counters, issued, name, tx) =
            (counters.clone(), issued.clone(), name.clone(), tx.clone());
        tokio::spawn(async move {
            let bytes = frame.as_bytes();
            let msgid = frame.msgid().unwrap();
            let reply = match method.as_str() {
                message::PRE_REQUEST => {
                    // Strings are bytes to an agent (the Go agent's decoder takes invalid
                    // UTF-8): this fixture does not parse them.
                    let n = counters.pre.fetch_add(1, Ordering::Relaxed) + 1;
                    let id = format!("{name}-{n}");
                    issued.lock().unwrap().insert(id.clone());
                    let padding = match behavior {
                        Behavior::LargeAnswers(n) => vec![("X-Pad".to_owned(), "p".repeat(n))],
                        _ => Vec::new(),
                    };
                    let out = RPCMsgOut {
                        waf_response: 200,
                        request_id: id,
                        request_headers: padding,
                        ..Default::default()
                    };
                    message::encode_response(msgid, None, &out)
                }
                message::MODULE_INIT => {
                    counters.init.fetch_add(1, Ordering::Relaxed);
                    let out = RPCMsgOut {
                        waf_response: 200,
                        ..Default::default()
                    };
                    message::encode_response(msgid, None, &out)
                }
                message::UPDATE_REQUEST => {
                    let (_, _, params): (u64, String, RPCMsgIn2) =
                        message::decode_request(bytes).unwrap();
                    if issued.lock().unwrap().remove(&params.request_id) {
                        counters.updates_matched.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.updates_orphaned.fetch_add(1, Ordering::Relaxed);
                    }
                    message::encode_response(msgid, None, &0)
                }
                message::POST_REQUEST => {
                    counters.post.fetch_add(1, Ordering::Relaxed);
                    message::encode_response(msgid, None, &0)
                }
                _ => {
                    counters.other.fetch_add(1, Ordering::Relaxed);
                    message::encode_response(msgid, Some("unknown method"), &())
                }
            };
            if let Behavior::Slow(d) = behavior {
                tokio::time::sleep(d).await;
            }
            let _ = tx.send(reply);
        });
    }
    drop(tx);
    if stop.is_cancelled() || behavior == Behavior::DropPreRequests {
        writer.abort();
    } else {
        let _ = writer.await;
    }
}

/// A proxy running in-process.
pub struct RunningProxy {
    pub rpc: SocketAddr,
    pub admin: SocketAddr,
    /// The control socket (`sigsci_proxy::request_drain`).
    pub control: PathBuf,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<DrainReport>>,
}

impl RunningProxy {
    pub async fn stop(self) -> DrainReport {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

/// Options for a test proxy: loopback ports, short drain.
pub fn options() -> Options {
    Options {
        listen: Some(vec!["127.0.0.1:0".parse().unwrap()]),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        drain_delay: Some(Dur(Duration::from_millis(50))),
        drain_timeout: Some(Dur(Duration::from_secs(3))),
        agents_file_poll: Some(Dur(Duration::from_millis(50))),
        // Generous deadlines: tests run on busy machines; behaviour, not speed, is checked.
        connect_timeout: Some(Dur(Duration::from_secs(1))),
        rpc_timeout: Some(Dur(Duration::from_secs(3))),
        ..Options::default()
    }
}

pub fn with_agents(agents: &[&Agent]) -> Options {
    Options {
        agents: Some(agents.iter().map(|a| a.addr.to_string()).collect()),
        ..options()
    }
}

pub async fn start_proxy(options: Options) -> RunningProxy {
    let config = Config::from_options(options);
    config.validate().unwrap();
    let proxy = Proxy::bind(config).await.unwrap();
    let rpc = match &proxy.rpc_addrs()[0] {
        ListenAddr::Tcp(a) => *a,
        ListenAddr::Unix(_) => unreachable!(),
    };
    let admin = proxy.admin_addr();
    let control = proxy.control_path().to_owned();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy.run(shutdown.clone()));
    let running = RunningProxy {
        rpc,
        admin,
        control,
        shutdown,
        task,
    };
    // Wait until the membership is applied.
    for _ in 0..200 {
        if http(running.admin, "GET", "/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

/// A module-like call: connect, send one request, read one response, close.
pub async fn call<P: Serialize, R: DeserializeOwned>(
    addr: SocketAddr,
    msgid: u64,
    method: &str,
    params: &P,
) -> (u64, Option<String>, Option<R>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&message::encode_request(msgid, method, params))
        .await
        .unwrap();
    let mut frames = FramedRead::new(s, FrameCodec::default());
    let frame = tokio::time::timeout(Duration::from_secs(5), frames.next())
        .await
        .expect("an answer within 5 s")
        .expect("an answer before close")
        .unwrap();
    message::decode_response(frame.as_bytes()).unwrap()
}

pub fn pre_request() -> RPCMsgIn {
    RPCMsgIn {
        method: "GET".into(),
        uri: "/".into(),
        remote_addr: "10.0.0.1".into(),
        ..Default::default()
    }
}

/// PreRequest through `addr`; returns the RequestID.
pub async fn pre(addr: SocketAddr) -> String {
    let t = std::time::Instant::now();
    let (_, err, out): (_, _, Option<RPCMsgOut>) =
        call(addr, 7, message::PRE_REQUEST, &pre_request()).await;
    assert_eq!(err, None, "after {:?}", t.elapsed());
    out.unwrap().request_id
}

/// UpdateRequest through `addr`.
pub async fn update(addr: SocketAddr, request_id: &str) -> Option<String> {
    let params = RPCMsgIn2 {
        request_id: request_id.into(),
        response_code: 200,
        ..Default::default()
    };
    let (_, err, _): (_, _, Option<i64>) = call(addr, 8, message::UPDATE_REQUEST, &params).await;
    err
}

/// A minimal HTTP/1.1 client for the admin port: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Writes a membership file (JSON) for `--agents-file`.
pub fn write_agents_file(path: &PathBuf, agents: &[(&Agent, &str)]) {
    let entries: Vec<_> = agents
        .iter()
        .map(|(a, state)| serde_json::json!({"address": a.addr.to_string(), "id": a.name, "state": state}))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&entries).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}
