//! Test fixtures: agents (the agent simulator, `sigsci-simulator`, in-process, so that the proxy
//! is tested against an implementation of the protocol that shares none of its code), a
//! module-like client built on the simulator's own independent wire module, and a proxy started
//! in-process with a shutdown the test owns.

pub mod process;
pub mod recorder;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use sigsci_proxy::config::{Dur, ListenAddr, Options};
use sigsci_proxy::{Config, DrainReport, Proxy};
pub use simulator::agent::{AgentConfig, AgentStats, Faults, SimAgent};
pub use simulator::rpc::{self, RPCMsgIn, RPCMsgIn2, RPCMsgOut, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single wait in a test may take before it fails: a test must stop by itself.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A simulated agent on 127.0.0.1 ([`agent_config`] unless started otherwise). It runs until
/// [`Agent::kill`] or the end of the test's runtime.
pub struct Agent {
    /// The simulator: stats, faults switched at run time.
    pub sim: SimAgent,
    /// Its RPC address.
    pub addr: SocketAddr,
}

/// Faults with nothing on (`slow` 1: normal speed).
pub fn no_faults() -> Faults {
    Faults {
        slow: 1.0,
        ..Faults::default()
    }
}

/// A simulator configuration for tests: loopback, every PreRequest gets a RequestID.
pub fn agent_config() -> AgentConfig {
    SimAgent::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .flag_fraction(1.0)
}

impl Agent {
    /// A well-behaved agent.
    pub async fn start() -> Agent {
        Self::spawn(agent_config()).await
    }

    /// An agent with `faults` on from the start.
    pub async fn with_faults(faults: Faults) -> Agent {
        Self::spawn(agent_config().faults(faults)).await
    }

    /// An agent whose every answer is delayed by `delay`.
    pub async fn slow(delay: Duration) -> Agent {
        Self::with_faults(Faults {
            delay,
            ..no_faults()
        })
        .await
    }

    /// An agent started from `config`.
    pub async fn spawn(config: AgentConfig) -> Agent {
        let sim = config.spawn().await.unwrap();
        let addr = sim.tcp_addr().expect("a TCP agent");
        Agent { sim, addr }
    }

    /// Its counters now.
    pub fn stats(&self) -> AgentStats {
        self.sim.stats()
    }
    /// PreRequests received.
    pub fn pre(&self) -> u64 {
        self.stats().prerequests
    }
    /// UpdateRequests whose RequestID this agent issued.
    pub fn matched(&self) -> u64 {
        self.stats().updates_matched
    }
    /// UpdateRequests whose RequestID this agent never issued.
    pub fn orphaned(&self) -> u64 {
        self.stats().updates_orphaned
    }
    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.stats().connections
    }
    /// Stops it as a crash would (the port is free when this returns).
    pub async fn kill(self) -> AgentStats {
        self.sim.kill().await
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
        tokio::time::timeout(PATIENCE, self.task)
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
        // Likewise a call may wait for an agent's slot: the overload queue's shedding is tested
        // on paused time (proxy/src/overload/tests.rs) and by the overload scenarios.
        queue_timeout: Some(Dur(Duration::from_secs(1))),
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
    start_config(valid(options)).await
}

fn valid(options: Options) -> Config {
    let config = Config::from_options(options);
    config.validate().unwrap();
    config
}

/// A proxy from `config` as given, valid or not (a test that needs a combination `validate`
/// refuses to reach a state at all).
pub async fn start_config(config: Config) -> RunningProxy {
    let claim = recorder::shared().await;
    start_claimed(config, Some(claim)).await
}

impl recorder::Alone {
    /// A proxy of the test that holds the recorder alone: its counters are this test's.
    pub async fn start_proxy(&self, options: Options) -> RunningProxy {
        start_claimed(valid(options), None).await
    }
}

/// Starts the proxy; the task running it holds `claim` (the recorder shared) until it ends.
async fn start_claimed(config: Config, claim: Option<recorder::Shared>) -> RunningProxy {
    let proxy = Proxy::bind(config).await.unwrap();
    let rpc = match &proxy.rpc_addrs()[0] {
        ListenAddr::Tcp(a) => *a,
        ListenAddr::Unix(_) => unreachable!(),
    };
    let admin = proxy.admin_addr();
    let control = proxy.control_path().to_owned();
    let shutdown = CancellationToken::new();
    let run = proxy.run(shutdown.clone());
    let task = tokio::spawn(async move {
        let _claim = claim;
        run.await
    });
    let running = RunningProxy {
        rpc,
        admin,
        control,
        shutdown,
        task,
    };
    // Readiness is a latch set once the first membership is applied (even an empty one).
    wait_until("/readyz answers 200", async || {
        http(running.admin, "GET", "/readyz").await.0 == 200
    })
    .await;
    running
}

/// Polls `done` every 5 ms; panics naming `what` after [`PATIENCE`].
pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads one whole response frame from `s` with the simulator's frame walker (not the proxy's
/// codec); `None` if the peer closes first. Panics after [`PATIENCE`].
pub async fn read_frame(s: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(n) = rpc::frame_len(buf, rpc::MAX_FRAME_BYTES).unwrap() {
                return Some(buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("a frame or a close within the test's patience")
}

/// Reads one response from `s`: `(msgid, error, result)`; panics on a close.
pub async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> (u64, Option<String>, Reply) {
    let frame = read_frame(s, &mut Vec::new())
        .await
        .expect("an answer before close");
    rpc::decode_response(&frame).unwrap()
}

/// A module-like call: connect, send one request, read one response, close.
pub async fn call<P: Serialize>(
    addr: SocketAddr,
    msgid: u64,
    method: &str,
    params: &P,
) -> (u64, Option<String>, Reply) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&rpc::encode_request(msgid, method, params))
        .await
        .unwrap();
    read_response(&mut s).await
}

/// A PreRequest's params as a module sends them.
pub fn pre_request() -> RPCMsgIn {
    RPCMsgIn {
        Method: "GET".into(),
        URI: "/".into(),
        RemoteAddr: "10.0.0.1".into(),
        ..Default::default()
    }
}

/// The result map of a successful PreRequest or ModuleInit.
pub fn out(reply: Reply) -> RPCMsgOut {
    match reply {
        Reply::Out(o) => o,
        other => panic!("expected a result map, got {other:?}"),
    }
}

/// PreRequest through `addr` from another source address, 127.0.0.2: another app pod, which
/// the proxy's overload queue keeps apart from what 127.0.0.1 sends. Returns the RequestID.
pub async fn pre_from_another_pod(addr: SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(&rpc::encode_request(7, rpc::PRE_REQUEST, &pre_request()))
        .await
        .unwrap();
    let (_, err, reply) = read_response(&mut s).await;
    assert_eq!(err, None);
    out(reply).RequestID
}

/// PreRequest through `addr`; returns the RequestID.
pub async fn pre(addr: SocketAddr) -> String {
    let t = Instant::now();
    let (_, err, reply) = call(addr, 7, rpc::PRE_REQUEST, &pre_request()).await;
    assert_eq!(err, None, "after {:?}", t.elapsed());
    out(reply).RequestID
}

/// UpdateRequest through `addr`; the error, if any.
pub async fn update(addr: SocketAddr, request_id: &str) -> Option<String> {
    let params = RPCMsgIn2 {
        RequestID: request_id.into(),
        ResponseCode: 200,
        ..Default::default()
    };
    call(addr, 8, rpc::UPDATE_REQUEST, &params).await.1
}

/// The value of one series on the proxy's `/metrics` (0 while absent). The counters are the
/// process's, not the proxy's: a test compares two readings taken while it runs
/// [`recorder::alone`].
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, text) = http(admin, "GET", "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
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
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("an admin answer within the test's patience")
        .unwrap();
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
        .map(|(a, state)| {
            let address = a.addr.to_string();
            serde_json::json!({"address": address, "id": address, "state": state})
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&entries).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}
