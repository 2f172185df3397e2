//! A fake Kubernetes API server for tests, speaking the real wire protocol over HTTP/1.1 on
//! `127.0.0.1:0`, so that tests run the real `kube` client (and kube-runtime's watcher) against
//! it. One crate rather than a file per test binary: agent-pool's discovery tests and the load
//! tester's cluster mode share it.
//!
//! Served (namespaced paths only; label selectors of equality terms):
//! - `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices` — list, or with
//!   `watch=1|true&resourceVersion=R` a stream of watch events (see [`endpointslices`]);
//! - `GET /apis/apps/v1/namespaces/{ns}/deployments/{name}`, and its `scale` subresource:
//!   `GET`, `PATCH` (merge, strategic-merge or JSON body with `spec.replicas`), `PUT` (a `Scale`);
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=…` (a `PodList`) and
//!   `DELETE /api/v1/namespaces/{ns}/pods/{name}` (`gracePeriodSeconds` 0 removes the pod at
//!   once; otherwise it gets a `deletionTimestamp` and stays until the test removes it, as a
//!   kubelet would after the pod's preStop hook and exit) — see [`workloads`];
//! - `GET|POST /api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/{path}` — forwarded to the
//!   loopback address the test mapped that pod's port to (see [`pod_proxy`]);
//! - any other kind the test stored as JSON, get and list, and self-subject access reviews
//!   (see [`objects`]); `GET /version`.
//!
//! Anything else is logged to stderr with its query and answered 404. Every request is recorded
//! ([`FakeApiServer::requests`]) for assertions, and scale changes and pod deletions are also
//! sent to [`FakeApiServer::events`] subscribers, so a test can act as the Deployment
//! controller and the kubelet. The test can stop and restart the whole server on the same port;
//! the objects persist across restarts, as etcd would keep them.

#![warn(missing_docs)]

pub mod endpointslices;
pub mod objects;
pub mod pod_proxy;
mod query;
pub mod workloads;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

pub use workloads::Event;

/// What the fake was asked, for assertions on the verbs a client uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// `list`, `watch`, `get`, `patch`, `update`, `delete`, `proxy`, or `unexpected`.
    pub verb: &'static str,
    /// `endpointslices`, `deployments`, `deployments/scale`, `pods`, `pods/proxy`; empty if the
    /// path was unexpected.
    pub resource: String,
    /// Namespace from the path (empty if the path was unexpected).
    pub namespace: String,
    /// Object name from the path (`name:port/path` for `pods/proxy`), empty for collections.
    pub name: String,
    /// The decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The request body, when it was JSON.
    pub body: Option<Value>,
}

#[derive(Default)]
struct State {
    /// Last resourceVersion handed out (a global counter, as etcd's revision).
    rv: u64,
    slices: endpointslices::Slices,
    workloads: workloads::Workloads,
    objects: objects::Objects,
    /// Pod ports the test mapped to loopback addresses: (namespace, pod, port) → address.
    pod_ports: BTreeMap<(String, String, u16), SocketAddr>,
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
            addr: "127.0.0.1:0".parse().expect("address"),
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
        let url = format!("http://{}", self.addr).parse().expect("url");
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }

    /// Cuts every connection (watches end abruptly) and refuses new ones until
    /// [`restart`](Self::restart). Objects are kept.
    pub fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort(); // drops the JoinSet, which aborts every connection task
        }
        self.state().slices.watchers.clear();
    }

    /// Listens again on the same address (or binds `127.0.0.1:0` the first time).
    pub async fn restart(&mut self) {
        self.stop();
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("bind");
        let listener = socket.listen(64).expect("listen");
        self.addr = listener.local_addr().expect("local address");
        self.accept = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }

    /// Answers every request with `status` (`None`: serve normally again). Open watches are cut.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        let mut state = self.state();
        state.failing = status;
        state.slices.watchers.clear();
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state().requests.clone()
    }

    /// How many requests had this verb (`list`, `watch`, `get`, `patch`, …).
    pub fn count(&self, verb: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.verb == verb)
            .count()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state lock; a test that panicked while holding it has failed already, so poisoning is
/// ignored rather than turned into a second panic.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
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
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("json"))).boxed())
        .expect("response")
}

/// A `Status` object, as the API server answers errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

/// What a path names.
enum Route {
    EndpointSlices,
    Deployment(String),
    Scale(String),
    Pods,
    Pod(String),
    /// Pod name, port, and the path after `/proxy`.
    PodProxy(String, u16, String),
}

fn route(path: &str) -> Option<(String, Route)> {
    let (ns, rest) = if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
        rest.split_once('/')?
    } else if let Some(rest) = path.strip_prefix("/apis/apps/v1/namespaces/") {
        let (ns, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix("deployments/")?;
        return Some((
            ns.to_owned(),
            match rest.split_once('/') {
                None => Route::Deployment(rest.to_owned()),
                Some((name, "scale")) => Route::Scale(name.to_owned()),
                Some(_) => return None,
            },
        ));
    } else {
        let rest = path.strip_prefix("/apis/discovery.k8s.io/v1/namespaces/")?;
        let (ns, rest) = rest.split_once('/')?;
        return (rest == "endpointslices").then(|| (ns.to_owned(), Route::EndpointSlices));
    };
    let r = match rest.split_once('/') {
        None if rest == "pods" => Route::Pods,
        Some(("pods", rest)) => match rest.split_once('/') {
            None => Route::Pod(rest.to_owned()),
            Some((target, proxied)) => {
                let proxied = proxied.strip_prefix("proxy")?;
                let (name, port) = target.split_once(':')?;
                let path = if proxied.is_empty() { "/" } else { proxied };
                Route::PodProxy(name.to_owned(), port.parse().ok()?, path.to_owned())
            }
        },
        _ => return None,
    };
    Some((ns.to_owned(), r))
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let query = query::parse_query(&raw_query);
    let method = parts.method.clone();
    let watch = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    let routed = route(&path).and_then(|(ns, r)| {
        let (verb, resource, name) = verb_of(&r, &method, watch)?;
        Some((ns, r, verb, resource, name))
    });
    let Some((namespace, route, verb, resource, name)) = routed else {
        if let Some(response) = other_kinds(&state, &method, &path, &query, &body) {
            return Ok(response);
        }
        eprintln!("fake apiserver: unexpected request {method} {path}?{raw_query}");
        return Ok(not_served(&state, query));
    };
    let Some(selector) =
        query::parse_selector(query.get("labelSelector").map(String::as_str).unwrap_or(""))
    else {
        eprintln!("fake apiserver: unsupported labelSelector in {path}?{raw_query}");
        return Ok(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "unsupported labelSelector",
        ));
    };
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    {
        let mut guard = lock(&state);
        guard.requests.push(Logged {
            verb,
            resource: resource.to_owned(),
            namespace: namespace.clone(),
            name,
            query: query.clone(),
            body: json_body.clone(),
        });
        if let Some(code) = guard.failing {
            return Ok(status(code, "InternalError", "failing on purpose"));
        }
    }
    if let Route::PodProxy(pod, port, proxied) = route {
        let target = pod_proxy::target(&lock(&state), &namespace, &pod, port);
        let uri = match raw_query.as_str() {
            "" => proxied,
            q => format!("{proxied}?{q}"),
        };
        return Ok(match target {
            Ok(addr) => pod_proxy::forward(addr, method, &uri, body).await,
            Err(response) => *response,
        });
    }
    let request = Routed {
        namespace,
        watch,
        selector,
        query,
        body: json_body,
    };
    Ok(serve(&mut lock(&state), route, &method, request))
}

/// The RBAC verb, resource and object name a request needs, as the real API server authorises
/// it; `None` for a method the route does not serve.
fn verb_of(
    route: &Route,
    method: &Method,
    watch: bool,
) -> Option<(&'static str, &'static str, String)> {
    let (verb, resource, name) = match (route, method) {
        (Route::EndpointSlices, &Method::GET) if watch => ("watch", "endpointslices", ""),
        (Route::EndpointSlices, &Method::GET) => ("list", "endpointslices", ""),
        (Route::Deployment(n), &Method::GET) => ("get", "deployments", n.as_str()),
        (Route::Scale(n), &Method::GET) => ("get", "deployments/scale", n.as_str()),
        (Route::Scale(n), &Method::PATCH) => ("patch", "deployments/scale", n.as_str()),
        (Route::Scale(n), &Method::PUT) => ("update", "deployments/scale", n.as_str()),
        (Route::Pods, &Method::GET) => ("list", "pods", ""),
        (Route::Pod(n), &Method::DELETE) => ("delete", "pods", n.as_str()),
        (Route::PodProxy(..), &Method::GET | &Method::POST) => ("proxy", "pods/proxy", ""),
        _ => return None,
    };
    let name = match route {
        Route::PodProxy(pod, port, p) => format!("{pod}:{port}{p}"),
        _ => name.to_owned(),
    };
    Some((verb, resource, name))
}

/// Logs a request the fake does not serve (tests see it as verb `unexpected`) and answers 404.
fn not_served(state: &Mutex<State>, query: BTreeMap<String, String>) -> Response<Body> {
    lock(state).requests.push(Logged {
        verb: "unexpected",
        resource: String::new(),
        namespace: String::new(),
        name: String::new(),
        query,
        body: None,
    });
    status(StatusCode::NOT_FOUND, "NotFound", "not served by the fake")
}

/// What a routed request carries besides its route and method.
struct Routed {
    namespace: String,
    watch: bool,
    selector: Vec<(String, String)>,
    query: BTreeMap<String, String>,
    body: Option<Value>,
}

/// Serves a logged, routed request from the state (every route but the pod proxy).
fn serve(state: &mut State, route: Route, method: &Method, r: Routed) -> Response<Body> {
    let ns = &r.namespace;
    match route {
        Route::EndpointSlices if r.watch => {
            endpointslices::watch(state, r.namespace, r.selector, &r.query)
        }
        Route::EndpointSlices => endpointslices::list(state, ns, &r.selector),
        Route::Deployment(name) => workloads::get_deployment(state, ns, &name),
        Route::Scale(name) if method == Method::GET => workloads::get_scale(state, ns, &name),
        Route::Scale(name) => workloads::set_scale(state, ns, &name, r.body.as_ref()),
        Route::Pods => workloads::list_pods(state, ns, &r.selector),
        Route::Pod(name) => workloads::delete_pod(state, ns, &name, r.body, &r.query),
        Route::PodProxy(..) => unreachable!("the pod proxy is served before"),
    }
}

/// A path of [`objects`] (or `/version`), logged and served; `None` if it is none of them.
fn other_kinds(
    state: &Mutex<State>,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Bytes,
) -> Option<Response<Body>> {
    if path == "/version" && method == Method::GET {
        return Some(full(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"}),
        ));
    }
    let parsed = objects::parse(path)?;
    let review = parsed.is_review();
    let verb = match *method {
        Method::GET if parsed.is_named() => "get",
        Method::GET => "list",
        Method::POST if review => "create",
        _ => return None,
    };
    let selector =
        query::parse_selector(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let json_body: Option<Value> = serde_json::from_slice(body).ok();
    let mut guard = lock(state);
    guard.requests.push(Logged {
        verb,
        resource: parsed.resource(),
        namespace: parsed.namespace().to_owned(),
        name: parsed.name().to_owned(),
        query: query.clone(),
        body: json_body.clone(),
    });
    if let Some(code) = guard.failing {
        return Some(status(code, "InternalError", "failing on purpose"));
    }
    Some(if review {
        objects::review(&guard, json_body.as_ref())
    } else {
        objects::get(&guard, &parsed, &selector)
    })
}

/// A JSON watch-event or list line, newline-terminated.
fn to_line(value: &Value) -> Bytes {
    let mut text = serde_json::to_vec(value).expect("json");
    text.push(b'\n');
    Bytes::from(text)
}

/// The parts of a namespaced object every collection here needs.
fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().expect("object namespace"),
        meta.name.clone().expect("object name"),
    )
}
