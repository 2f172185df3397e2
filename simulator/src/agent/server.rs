//! The simulator's RPC server: accept loop (with the refuse/hangup faults), one task per
//! connection reading pipelined frames, one task per request (so answers may leave out of order,
//! as from Go's net/rpc server), and a writer task that sends each answer in one `write_all`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{AgentConfig, Faults};
use super::cpu::Cpu;
use super::inspect::{Inspected, Update};
use super::stats::AgentStats;
use super::stats::Counters;
use crate::addr::{Listener, RpcAddr, Stream};
use crate::rpc::{self, Envelope, RPCMsgIn, RPCMsgOut};

/// The error text of the `error` fault.
pub const INJECTED_ERROR: &str = "sim: injected error (error fault)";

/// A header a test can put in `HeadersIn` to set that one request's service time, in
/// microseconds (used to force out-of-order answers deterministically).
pub const SERVICE_TIME_HEADER: &str = "X-Sim-Service-Time-Us";

/// The request header that carries [`AgentConfig::answer_padding`] in PreRequest answers.
pub const PADDING_HEADER: &str = "X-Sim-Padding";

/// An answer sent within this of its request's arrival is counted as timely: the proxy's
/// default agent deadline.
const TIMELY: Duration = Duration::from_millis(80);

/// State shared by every task of one simulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: AgentConfig,
    patterns: Vec<(Vec<u8>, String)>,
    counters: Counters,
    faults: watch::Sender<Faults>,
    /// Requests left before the crash fault fires; negative = off.
    exit_after: AtomicI64,
    contexts: Mutex<Contexts>,
    /// Worker slots or shared processors.
    cpu: Cpu,
    /// Graceful stop: no new connections or requests, in-flight ones finish.
    pub(crate) stop: CancellationToken,
    /// Hard stop: every connection dropped at once.
    pub(crate) crash: CancellationToken,
    /// Set by `POST /shutdown`.
    pub(crate) shutdown_requested: CancellationToken,
    /// Connection and request tasks.
    pub(crate) tracker: TaskTracker,
    /// When the simulator started; the startup probe answers 200 from `started +
    /// cfg.startup_delay` on ("rules loaded").
    started: Instant,
}

/// Issued RequestIDs: pending ones, and recently expired ones kept to tell "late" from
/// "never issued here".
#[derive(Debug, Default)]
struct Contexts {
    pending: HashMap<String, Instant>,
    expired: HashMap<String, Instant>,
}

impl Shared {
    pub(crate) fn new(cfg: AgentConfig, faults: watch::Sender<Faults>) -> Shared {
        let patterns = cfg
            .attack_patterns
            .iter()
            .map(|(p, t)| (p.to_ascii_lowercase().into_bytes(), t.clone()))
            .collect();
        let now = Instant::now();
        let exit_after = faults.borrow().exit_after.map_or(-1, |n| n as i64);
        let crash = CancellationToken::new();
        Shared {
            cpu: Cpu::new(cfg.shape, cfg.workers, &crash),
            cfg,
            patterns,
            counters: Counters::default(),
            faults,
            exit_after: AtomicI64::new(exit_after),
            contexts: Mutex::default(),
            stop: CancellationToken::new(),
            crash,
            shutdown_requested: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started: now,
        }
    }

    /// Whether the startup delay has passed (the real agent: rules and configuration loaded).
    pub(crate) fn started(&self) -> bool {
        self.started.elapsed() >= self.cfg.startup_delay
    }

    pub(crate) fn stats(&self) -> AgentStats {
        self.sweep(Instant::now());
        self.counters.snapshot()
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults.borrow().clone()
    }

    pub(crate) fn set_faults(&self, f: Faults) {
        self.exit_after
            .store(f.exit_after.map_or(-1, |n| n as i64), Relaxed);
        self.faults.send_replace(f);
    }

    /// Moves expired contexts aside and forgets very old ones.
    fn sweep(&self, now: Instant) {
        let exp = self.cfg.context_expiration;
        let keep_expired = (exp * 6).max(Duration::from_secs(60));
        let mut c = self.contexts.lock().expect("not poisoned");
        let mut newly = Vec::new();
        c.pending.retain(|id, issued| {
            let alive = now.duration_since(*issued) < exp;
            if !alive {
                newly.push((id.clone(), *issued));
            }
            alive
        });
        self.counters
            .contexts_expired
            .fetch_add(newly.len() as u64, Relaxed);
        c.expired.extend(newly);
        c.expired
            .retain(|_, issued| now.duration_since(*issued) < keep_expired);
        self.counters.pending.store(c.pending.len() as u64, Relaxed);
    }

    /// Waits for the service time (scaled by `slow`) on the agent's CPU, plus any delay fault.
    async fn serve_time(&self, service: Duration) {
        let faults = self.faults();
        let service = service.mul_f64(faults.slow);
        self.cpu.work(service, faults.delay).await;
        // Counted once served: a backlog shows as busy while it drains, as a real agent's CPU.
        self.counters
            .busy_us
            .fetch_add(service.as_micros() as u64, Relaxed);
    }

    /// The answer to one request (a whole response frame).
    fn answer(&self, msgid: u64, method: &str, params: &[u8]) -> Vec<u8> {
        let c = &self.counters;
        match method {
            rpc::PRE_REQUEST => match rpc::decode_params::<Inspected>(params) {
                Ok(req) => rpc::encode_response(msgid, None, &self.decide(&req)),
                Err(e) => self.bad_params(msgid, e),
            },
            rpc::UPDATE_REQUEST => match rpc::decode_params::<Update>(params) {
                Ok(req) => {
                    self.update(&String::from_utf8_lossy(&req.RequestID.0));
                    rpc::encode_response(msgid, None, &0)
                }
                Err(e) => self.bad_params(msgid, e),
            },
            rpc::POST_REQUEST => match rpc::decode_params::<Inspected>(params) {
                Ok(_) => rpc::encode_response(msgid, None, &0),
                Err(e) => self.bad_params(msgid, e),
            },
            rpc::MODULE_INIT => match rpc::decode_params::<Inspected>(params) {
                Ok(_) => {
                    let out = RPCMsgOut {
                        WAFResponse: 200,
                        ..Default::default()
                    };
                    rpc::encode_response(msgid, None, &out)
                }
                Err(e) => self.bad_params(msgid, e),
            },
            other => {
                c.unknown_methods.fetch_add(1, Relaxed);
                // Go's net/rpc server text for an unknown method.
                rpc::encode_response(msgid, Some(&format!("rpc: can't find method {other}")), &())
            }
        }
    }

    fn bad_params(&self, msgid: u64, e: rpc::FrameError) -> Vec<u8> {
        self.counters.bad_params.fetch_add(1, Relaxed);
        rpc::encode_response(msgid, Some(&format!("invalid params: {e}")), &())
    }

    fn count_method(&self, method: &str) {
        let c = &self.counters;
        if !self.started() {
            c.before_startup.fetch_add(1, Relaxed);
        }
        let counter = match method {
            rpc::PRE_REQUEST => &c.prerequests,
            rpc::UPDATE_REQUEST => &c.updaterequests,
            rpc::POST_REQUEST => &c.postrequests,
            rpc::MODULE_INIT => &c.moduleinits,
            _ => return,
        };
        if method == rpc::PRE_REQUEST && c.moduleinits.load(Relaxed) == 0 {
            c.prerequests_before_module_init.fetch_add(1, Relaxed);
        }
        counter.fetch_add(1, Relaxed);
    }

    /// The WAF decision for a PreRequest: a pattern in the raw or decoded URI path or query, a
    /// header value, or the raw or decoded (urlencoded form) body blocks it.
    fn decide(&self, req: &Inspected) -> RPCMsgOut {
        let views = req.views();
        let hit = self
            .patterns
            .iter()
            .find(|(p, _)| views.iter().any(|v| contains(v, p)));
        let (code, tag) = match hit {
            Some((_, tag)) => (406, Some(tag.as_str())),
            None if self.cfg.flag_fraction > 0.0
                && rand::random::<f64>() < self.cfg.flag_fraction =>
            {
                (200, Some("SIM-FLAGGED"))
            }
            None => (200, None),
        };
        let mut out = RPCMsgOut {
            WAFResponse: code,
            ..Default::default()
        };
        out.RequestHeaders
            .push(("X-SigSci-AgentResponse".into(), code.to_string()));
        if self.cfg.answer_padding > 0 {
            out.RequestHeaders
                .push((PADDING_HEADER.into(), "p".repeat(self.cfg.answer_padding)));
        }
        if let Some(tag) = tag {
            let id = uuid::Uuid::new_v4().to_string();
            out.RequestHeaders
                .push(("X-SigSci-Tags".into(), tag.into()));
            self.counters.flagged.fetch_add(1, Relaxed);
            if code == 406 {
                self.counters.blocked.fetch_add(1, Relaxed);
            }
            let now = Instant::now();
            let mut ctx = self.contexts.lock().expect("not poisoned");
            ctx.pending.insert(id.clone(), now);
            self.counters
                .pending
                .store(ctx.pending.len() as u64, Relaxed);
            out.RequestID = id;
        }
        out
    }

    /// Books an UpdateRequest as matched, expired or orphaned.
    fn update(&self, id: &str) {
        let now = Instant::now();
        let mut ctx = self.contexts.lock().expect("not poisoned");
        let c = &self.counters;
        match ctx.pending.remove(id) {
            Some(issued) if now.duration_since(issued) < self.cfg.context_expiration => {
                c.updates_matched.fetch_add(1, Relaxed);
            }
            Some(issued) => {
                // Expired but not swept yet.
                c.contexts_expired.fetch_add(1, Relaxed);
                c.updates_expired.fetch_add(1, Relaxed);
                ctx.expired.insert(id.to_owned(), issued);
            }
            None if ctx.expired.contains_key(id) => {
                c.updates_expired.fetch_add(1, Relaxed);
            }
            None => {
                c.updates_orphaned.fetch_add(1, Relaxed);
            }
        }
        c.pending.store(ctx.pending.len() as u64, Relaxed);
    }

    /// Counts one request toward the crash fault; true when it fires now.
    fn crash_due(&self) -> bool {
        if self.exit_after.load(Relaxed) < 0 {
            return false;
        }
        self.exit_after.fetch_sub(1, Relaxed) <= 0
    }
}

fn contains(haystack: &[u8], needle_lower: &[u8]) -> bool {
    haystack.len() >= needle_lower.len()
        && haystack
            .windows(needle_lower.len())
            .any(|w| w.eq_ignore_ascii_case(needle_lower))
}

/// Accepts connections until stopped; closes the listening socket while `refuse` is on.
pub(crate) async fn accept_loop(listener: Listener, addr: RpcAddr, shared: Arc<Shared>) {
    let mut faults = shared.faults.subscribe();
    let mut listener = Some(listener);
    let sweeper = {
        let shared = shared.clone();
        let every = (shared.cfg.context_expiration / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                shared.sweep(Instant::now());
            }
        })
    };
    loop {
        let refuse = faults.borrow_and_update().refuse;
        if refuse {
            listener = None;
        } else if listener.is_none() {
            match Listener::bind(&addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => tracing::warn!(error = %e, %addr, "Rebind failed"),
            }
        }
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = shared.crash.cancelled() => break,
            r = faults.changed() => { if r.is_err() { break } continue }
            r = async { listener.as_ref().expect("checked").accept().await }, if listener.is_some() => r,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.counters.connections.fetch_add(1, Relaxed);
        if shared.faults().hangup {
            shared.counters.faults_injected.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        }
        shared.tracker.spawn(connection(stream, shared.clone()));
    }
    sweeper.abort();
    if let Some(Listener::Unix(_, path)) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// Serves one connection: reads frames, spawns a task per request, writes answers in order of
/// completion.
async fn connection(stream: Stream, shared: Arc<Shared>) {
    let c = &shared.counters;
    c.connections_active.fetch_add(1, Relaxed);
    if shared.faults().reset {
        stream.set_reset_on_close();
    }
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = spawn_writer(wr, rx, shared.crash.clone());
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let end = loop {
        if let Some(end) = handle_frames(&shared, &tx, &mut buf).await {
            break end;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break End::Close,
                Ok(_) => {}
            },
            _ = shared.stop.cancelled() => break End::Close,
            _ = shared.crash.cancelled() => break End::Close,
        }
    };
    drop(tx);
    match end {
        // Drop both halves without a FIN: the stream was set to linger 0 at accept time when
        // the fault was already on; otherwise this is a plain close.
        End::Reset => writer.abort(),
        End::Close => {
            if let Ok(Some(wr)) = writer.await {
                drop(wr);
            }
        }
    }
    drop(rd);
    c.connections_active.fetch_sub(1, Relaxed);
}

/// How a connection ends.
enum End {
    /// Close it (FIN once the answers written so far are out).
    Close,
    /// The reset fault: close it at once, unanswered.
    Reset,
}

/// The connection's writer task: sends each answer in one `write_all`, until the answers end
/// (the half is handed back, shut down) or the crash fault fires (`None`).
fn spawn_writer(
    mut wr: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    crash: CancellationToken,
) -> JoinHandle<Option<WriteHalf<Stream>>> {
    let writer = async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        wr
    };
    tokio::spawn(async move {
        tokio::select! {
            w = writer => Some(w),
            _ = crash.cancelled() => None,
        }
    })
}

/// Handles every complete frame already in `buf`; `Some` when the connection is to end.
async fn handle_frames(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Vec<u8>>,
    buf: &mut BytesMut,
) -> Option<End> {
    let c = &shared.counters;
    loop {
        let n = match rpc::frame_len(buf, rpc::MAX_FRAME_BYTES) {
            Ok(Some(n)) => n,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "Malformed input; closing");
                c.malformed.fetch_add(1, Relaxed);
                return Some(End::Close);
            }
        };
        let frame = buf.split_to(n).freeze();
        match rpc::envelope(&frame) {
            Ok(Envelope::Request { msgid, method, .. }) => {
                if let Some(end) = request(shared, tx, msgid, method, &frame).await {
                    return Some(end);
                }
            }
            Ok(Envelope::Notification { .. }) => {
                c.notifications.fetch_add(1, Relaxed);
            }
            Ok(Envelope::Response { .. }) => {
                // A client has no business answering; ignore like a notification.
                c.notifications.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "Not an RPC frame; closing");
                c.malformed.fetch_add(1, Relaxed);
                return Some(End::Close);
            }
        }
    }
}

/// One request: the faults that answer it at once (or never), else a task that serves it.
async fn request(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Vec<u8>>,
    msgid: u64,
    method: &str,
    frame: &Bytes,
) -> Option<End> {
    let c = &shared.counters;
    shared.count_method(method);
    if shared.crash_due() {
        shared.crash.cancel();
        return Some(End::Close);
    }
    let faults = shared.faults();
    if faults.reset {
        c.faults_injected.fetch_add(1, Relaxed);
        return Some(End::Reset);
    }
    if faults.stall {
        // Read, never answer: the caller waits out its own deadline.
        c.faults_injected.fetch_add(1, Relaxed);
        c.stalled.fetch_add(1, Relaxed);
        return None;
    }
    if faults.error {
        // At once, no service time: a fast failer.
        c.faults_injected.fetch_add(1, Relaxed);
        c.errors_answered.fetch_add(1, Relaxed);
        let answer = rpc::encode_response(msgid, Some(INJECTED_ERROR), &());
        if tx.send(answer).await.is_ok() {
            c.responses.fetch_add(1, Relaxed);
        }
        return None;
    }
    spawn_answer(shared.clone(), tx.clone(), msgid, frame.clone());
    None
}

/// Serves one request on a task of its own: the service time, then the answer.
fn spawn_answer(shared: Arc<Shared>, tx: mpsc::Sender<Vec<u8>>, msgid: u64, frame: Bytes) {
    let service = service_time_override(&frame).unwrap_or_else(|| shared.cfg.service_time.sample());
    let arrived = Instant::now();
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        let work = async {
            shared.serve_time(service).await;
            let Ok(Envelope::Request { method, params, .. }) = rpc::envelope(&frame) else {
                unreachable!("parsed above")
            };
            let answer = shared.answer(msgid, method, params);
            if tx.send(answer).await.is_ok() {
                shared.counters.responses.fetch_add(1, Relaxed);
                if arrived.elapsed() <= TIMELY {
                    shared.counters.responses_timely.fetch_add(1, Relaxed);
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = shared.crash.cancelled() => {}
        }
    });
}

/// The test-only per-request service time, if the PreRequest carries [`SERVICE_TIME_HEADER`].
fn service_time_override(frame: &[u8]) -> Option<Duration> {
    // Cheap pre-check before decoding: the header name must appear in the bytes.
    let needle = SERVICE_TIME_HEADER.as_bytes();
    if !frame.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let Ok(Envelope::Request { params, .. }) = rpc::envelope(frame) else {
        return None;
    };
    let req: RPCMsgIn = rpc::decode_params(params).ok()?;
    let (_, v) = req
        .HeadersIn
        .iter()
        .find(|(k, _)| k == SERVICE_TIME_HEADER)?;
    v.parse().ok().map(Duration::from_micros)
}
