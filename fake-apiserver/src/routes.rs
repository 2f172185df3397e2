//! The HTTP side: the accept loop, which route a path names, the RBAC verb it needs, the request
//! log, and the dispatch to each kind's module. On top: it calls into every other module.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use crate::reply::{Body, full, status};
use crate::server::FakeApiServer;
use crate::state::{Logged, State, lock};
use crate::{endpointslices, objects, pod_proxy, query, workloads};

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
