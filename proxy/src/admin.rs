//! The admin HTTP server (hyper 1), on its own port, never part of the RPC Service. Read-only:
//! the manifests bind it on the pod's IP for the kubelet's probes and for Prometheus, so
//! anything it answered with a state change (a drain turns every module fail-open) would be a
//! way to switch inspection off from the network. Drain goes through the control socket
//! (`control`, a local Unix socket) or SIGTERM.
//!
//! Routes (GET only; any other method on them is 405):
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 once the first membership is in and until drain; 503 before and after
//!   (readiness). Agent health is not part of it: an agent blip must not pull every replica out
//!   of the Service at once (the modules would fail open for the seconds endpoints take to
//!   converge back, and UpdateRequests for terminating agents would find no proxy).
//! - `GET /metrics`: Prometheus text.
//! - `GET /agents`: JSON array, one object per known agent (address, affinity token, state,
//!   outstanding, latency, counters). It stays here: it changes nothing and discloses nothing
//!   the port does not already: the addresses are the `agent` labels of `/metrics` (and the
//!   EndpointSlices'), and a token is in every RequestID the proxy hands to modules; a token
//!   only routes an UpdateRequest to an agent that is still a member. It is the first page an
//!   operator needs when one agent misbehaves.
//! - `GET /hints`: the pool's autoscaling hint as JSON.
//! - `GET /flows`: JSON array, the 20 module sources (app pod addresses, or processes on a Unix
//!   socket) that sent the most calls while every agent was at its limit, over the last
//!   10-20 s, and how many of those were shed: who floods the pool, without a
//!   per-client metric label. Empty while the pool keeps up. The addresses are the pods'
//!   own, known to anyone on the pod network.

use std::convert::Infallible;
use std::sync::Arc;

use agent_pool::Pool;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use crate::drain::Readiness;
use crate::metrics;
use crate::overload::OverloadQueue;

/// What the admin routes read and act on.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The agent pool.
    pub(crate) pool: Pool,
    /// Flipped by drain.
    pub(crate) readiness: Arc<Readiness>,
    /// The metrics recorder.
    pub(crate) prometheus: PrometheusHandle,
    /// The overload queue (`/flows`).
    pub(crate) overload: Arc<OverloadQueue>,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json(body: serde_json::Result<Vec<u8>>) -> Response<Full<Bytes>> {
    match body {
        Ok(body) => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Answers one admin request. No I/O, so tests call it directly.
pub(crate) fn route<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if !state.readiness.is_serving() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if state.pool.snapshot().version() == 0 {
                text(StatusCode::SERVICE_UNAVAILABLE, "no membership yet\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(metrics::render(
                &state.prometheus,
                &state.pool,
            ))))
            .expect("static response parts are valid"),
        (&Method::GET, "/agents") => {
            let stats: Vec<_> = state
                .pool
                .snapshot()
                .agents()
                .iter()
                .map(|a| a.stats())
                .collect();
            json(serde_json::to_vec_pretty(&stats))
        }
        (&Method::GET, "/hints") => json(serde_json::to_vec_pretty(&state.pool.hints())),
        (&Method::GET, "/flows") => json(serde_json::to_vec_pretty(
            &state.overload.heaviest_flows(20),
        )),
        (_, "/healthz" | "/readyz" | "/metrics" | "/agents" | "/hints" | "/flows") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves admin HTTP/1 on `listener` until `exit` is cancelled.
pub(crate) async fn serve(listener: TcpListener, state: AdminState, exit: CancellationToken) {
    let state = Arc::new(state);
    loop {
        let (stream, _) = tokio::select! {
            () = exit.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "Admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let exit = exit.clone();
        tokio::spawn(
            async move {
                let service = service_fn(move |req| {
                    let response = route(&state, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = conn => if let Err(e) = r { debug!(error = %e, "Admin connection failed") },
                    () = exit.cancelled() => {}
                }
            }
            .in_current_span(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_pool::{Endpoint, PoolConfig, Update};

    fn state() -> AdminState {
        let pool = Pool::new(PoolConfig::default());
        AdminState {
            overload: OverloadQueue::new(pool.clone(), Default::default()),
            pool,
            readiness: Arc::new(Readiness::new()),
            prometheus: metrics::handle(),
        }
    }

    fn get(state: &AdminState, method: Method, path: &str) -> StatusCode {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        route(state, &req).status()
    }

    #[test]
    fn readiness_needs_a_membership_not_a_healthy_agent_and_turns_off_on_drain() {
        let state = state();
        assert_eq!(get(&state, Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(
            get(&state, Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.pool.apply(Update::Reset(vec![Endpoint::new(
            "127.0.0.1:9999".parse().unwrap(),
        )]));
        assert_eq!(get(&state, Method::GET, "/readyz"), StatusCode::OK);
        // Every agent gone: still ready (RPCs get an error frame at once; the Service keeps us).
        state.pool.apply(Update::Reset(vec![]));
        assert_eq!(get(&state, Method::GET, "/readyz"), StatusCode::OK);
        // `run` flips the latch when it sees a drain request (control socket or signal).
        state.readiness.drain();
        assert_eq!(
            get(&state, Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&state, Method::GET, "/healthz"), StatusCode::OK);
    }

    #[test]
    fn pages_and_errors() {
        let state = state();
        state.pool.apply(Update::Reset(vec![Endpoint::new(
            "127.0.0.1:9999".parse().unwrap(),
        )]));
        assert_eq!(get(&state, Method::GET, "/agents"), StatusCode::OK);
        assert_eq!(get(&state, Method::GET, "/hints"), StatusCode::OK);
        assert_eq!(get(&state, Method::GET, "/flows"), StatusCode::OK);
        assert_eq!(get(&state, Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(
            get(&state, Method::DELETE, "/agents"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&state, Method::GET, "/"), StatusCode::NOT_FOUND);
        // Nothing on this port changes state: drain is not a route.
        assert_eq!(get(&state, Method::POST, "/drain"), StatusCode::NOT_FOUND);
        assert_eq!(get(&state, Method::GET, "/drain"), StatusCode::NOT_FOUND);
        let req = Request::builder().uri("/metrics").body(()).unwrap();
        let body = route(&state, &req).into_body();
        let text = futures::executor::block_on(http_body_util::BodyExt::collect(body))
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("sigsci_proxy_agent_state{agent=\"127.0.0.1:9999\",state=\"ready\"} 1")
        );
        assert!(text.contains("sigsci_proxy_agents_recommended"));
    }
}
