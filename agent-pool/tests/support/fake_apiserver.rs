//! A fake Kubernetes API server for EndpointSlices, speaking the real list + watch protocol
//! over HTTP/1.1 on `127.0.0.1:0`, so that tests run kube-runtime's real watcher against it.
//!
//! Served: `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices` with `labelSelector`
//! (equality terms) — a list (`EndpointSliceList` with `metadata.resourceVersion`), or with
//! `watch=1|true&resourceVersion=R` a stream of newline-delimited watch events (ADDED, MODIFIED,
//! DELETED, BOOKMARK when `allowWatchBookmarks=true`), replaying the history after R first.
//! A watch from a compacted R gets what the real API server sends: HTTP 200 and one ERROR event
//! carrying a `Status` with code 410, reason `Expired`. Anything else is logged to stderr with
//! its query and answered 404. The test can drop watch streams, send 410 on them, change
//! objects without telling watchers (an event lost in a gap), and stop / restart the whole
//! server on the same port; the objects persist across restarts, as etcd would keep them.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

const PREFIX: &str = "/apis/discovery.k8s.io/v1/namespaces/";

/// What the fake was asked, for assertions on the verbs a client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// `list`, `watch`, or `unexpected`.
    pub verb: &'static str,
    /// Namespace from the path (empty if the path was unexpected).
    pub namespace: String,
    /// The decoded query parameters.
    pub query: BTreeMap<String, String>,
}

struct Watcher {
    namespace: String,
    selector: Vec<(String, String)>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// One recorded change: resourceVersion, namespace, labels of the object, event line.
struct Change {
    rv: u64,
    namespace: String,
    labels: Option<BTreeMap<String, String>>,
    line: Bytes,
}

#[derive(Default)]
struct State {
    /// Last resourceVersion handed out (a global counter, as etcd's revision).
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    slices: BTreeMap<(String, String), EndpointSlice>,
    /// Every change since the last compaction, for watch replay.
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    requests: Vec<Logged>,
    /// While set, every request is answered with this status (an API server up but failing,
    /// e.g. without etcd), after being logged.
    failing: Option<StatusCode>,
}

/// The fake server. Stops (connections cut) when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and serves.
    pub async fn start() -> FakeApiServer {
        let mut server = FakeApiServer {
            addr: "127.0.0.1:0".parse().unwrap(),
            state: Arc::default(),
            accept: None,
        };
        server.restart().await;
        server
    }

    /// The address it listens on (the same across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A real kube client pointed at this server, with no authentication.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).expect("kube client")
    }

    /// Cuts every connection (watches end abruptly) and refuses new ones until
    /// [`restart`](Self::restart). Objects are kept.
    pub fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort(); // drops the JoinSet, which aborts every connection task
        }
        self.state.lock().unwrap().watchers.clear();
    }

    /// Listens again on the same address (or binds `127.0.0.1:0` the first time).
    pub async fn restart(&mut self) {
        self.stop();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        self.accept = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }

    /// Creates or replaces a slice (namespace and name from its metadata) and tells watchers.
    pub fn apply(&self, slice: EndpointSlice) {
        self.change(slice, false, true);
    }

    /// Deletes a slice and tells watchers.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        let Some(mut slice) = state
            .slices
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            panic!("no slice {namespace}/{name}");
        };
        state.rv += 1;
        slice.metadata.resource_version = Some(state.rv.to_string());
        record(&mut state, "DELETED", &slice, true);
    }

    /// Creates or replaces a slice WITHOUT telling watchers and compacts the history past it:
    /// the change can only be learnt by a new list (the situation 410 Gone exists for).
    pub fn apply_unseen(&self, slice: EndpointSlice) {
        self.change(slice, true, false);
        let mut state = self.state.lock().unwrap();
        state.compacted = state.rv;
    }

    /// Forgets the history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.compacted = state.rv;
        state.history.clear();
    }

    /// Answers every request with `status` (`None`: serve normally again). Open watches are cut.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        let mut state = self.state.lock().unwrap();
        state.failing = status;
        state.watchers.clear();
    }

    /// Ends every open watch stream cleanly (as the API server does at its watch timeout).
    pub fn drop_watches(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    /// Sends an ERROR event with a 410 `Expired` Status on every open watch, then ends them.
    pub fn expire_watches(&self) {
        let mut state = self.state.lock().unwrap();
        let line = gone_line(state.rv, state.compacted);
        for watcher in state.watchers.drain(..) {
            let _ = watcher.tx.unbounded_send(line.clone());
        }
    }

    /// Sends a BOOKMARK at the current resourceVersion to watches that asked for bookmarks.
    pub fn bookmark(&self) {
        let state = self.state.lock().unwrap();
        let line = to_line(&json!({
            "type": "BOOKMARK",
            "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                       "metadata": {"resourceVersion": state.rv.to_string()}},
        }));
        for watcher in state.watchers.iter().filter(|w| w.bookmarks) {
            let _ = watcher.tx.unbounded_send(line.clone());
        }
    }

    /// Waits (up to 5 s, else panics) until a watch stream is open: the watcher lists first and
    /// watches after, so a test that wants to cut a live watch waits for it.
    pub async fn watching(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if self
                .state
                .lock()
                .unwrap()
                .watchers
                .iter()
                .any(|w| !w.tx.is_closed())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no watch opened within 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests had this verb (`list`, `watch`, `unexpected`).
    pub fn count(&self, verb: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.verb == verb)
            .count()
    }

    fn change(&self, mut slice: EndpointSlice, quiet: bool, keep_history: bool) {
        let namespace = slice.metadata.namespace.clone().expect("slice namespace");
        let name = slice.metadata.name.clone().expect("slice name");
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        slice.metadata.resource_version = Some(state.rv.to_string());
        let kind = if state
            .slices
            .contains_key(&(namespace.clone(), name.clone()))
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.slices.insert((namespace, name), slice.clone());
        if !quiet {
            record(&mut state, kind, &slice, keep_history);
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn record(state: &mut State, kind: &str, slice: &EndpointSlice, keep_history: bool) {
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    let labels = slice.metadata.labels.clone();
    let line = to_line(&json!({"type": kind, "object": slice}));
    state.watchers.retain(|w| {
        if w.namespace != namespace || !selects(&w.selector, labels.as_ref()) {
            return true;
        }
        w.tx.unbounded_send(line.clone()).is_ok()
    });
    if keep_history {
        let rv = state.rv;
        state.history.push(Change {
            rv,
            namespace,
            labels,
            line,
        });
    }
}

fn to_line(value: &Value) -> Bytes {
    let mut text = serde_json::to_vec(value).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

fn gone_line(rv: u64, compacted: u64) -> Bytes {
    to_line(&json!({
        "type": "ERROR",
        "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("too old resource version: {rv} ({compacted})"),
                   "reason": "Expired", "code": 410},
    }))
}

fn selects(selector: &[(String, String)], labels: Option<&BTreeMap<String, String>>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed())
        .unwrap()
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&raw_query);
    let namespace = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix("/endpointslices"))
        .filter(|ns| !ns.contains('/'))
        .map(str::to_owned);
    let (Some(namespace), &Method::GET) = (namespace, req.method()) else {
        eprintln!(
            "fake apiserver: unexpected request {} {path}?{raw_query}",
            req.method()
        );
        state.lock().unwrap().requests.push(Logged {
            verb: "unexpected",
            namespace: String::new(),
            query,
        });
        return Ok(full(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ));
    };
    let watch = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    let selector = match parse_selector(
        query.get("labelSelector").map(String::as_str).unwrap_or(""),
    ) {
        Some(s) => s,
        None => {
            eprintln!("fake apiserver: unsupported labelSelector in {path}?{raw_query}");
            return Ok(full(
                StatusCode::BAD_REQUEST,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400}),
            ));
        }
    };
    let mut state = state.lock().unwrap();
    state.requests.push(Logged {
        verb: if watch { "watch" } else { "list" },
        namespace: namespace.clone(),
        query: query.clone(),
    });
    if let Some(status) = state.failing {
        return Ok(full(
            status,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "InternalError", "code": status.as_u16()}),
        ));
    }
    if !watch {
        let items: Vec<&EndpointSlice> = state
            .slices
            .iter()
            .filter(|((ns, _), s)| {
                *ns == namespace && selects(&selector, s.metadata.labels.as_ref())
            })
            .map(|(_, s)| s)
            .collect();
        let list = json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                          "metadata": {"resourceVersion": state.rv.to_string()}, "items": items});
        return Ok(full(StatusCode::OK, &list));
    }

    let from: u64 = match query.get("resourceVersion").map(|v| v.parse()) {
        Some(Ok(rv)) => rv,
        _ => {
            eprintln!(
                "fake apiserver: watch without a numeric resourceVersion: {path}?{raw_query}"
            );
            0
        }
    };
    let (tx, rx) = mpsc::unbounded();
    if from < state.compacted {
        let _ = tx.unbounded_send(gone_line(from, state.compacted));
        drop(tx);
    } else {
        for change in &state.history {
            if change.rv > from
                && change.namespace == namespace
                && selects(&selector, change.labels.as_ref())
            {
                let _ = tx.unbounded_send(change.line.clone());
            }
        }
        let bookmarks = matches!(
            query.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        );
        state.watchers.push(Watcher {
            namespace,
            selector,
            bookmarks,
            tx,
        });
    }
    let body = StreamBody::new(rx.map(|line| Ok::<_, Infallible>(Frame::data(line))));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap())
}

/// `k=v` / `k==v` terms joined by commas; `None` for anything else.
fn parse_selector(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(|term| {
            let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
            (!k.contains('!')).then(|| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
