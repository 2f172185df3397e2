//! The API server's pod proxy (`/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/{path}`):
//! requests are forwarded to the loopback address the test mapped that pod's port to, so the
//! test runs real servers (simulated agents, proxies) on `127.0.0.1` and a client reads their
//! real counters through the API, as it would in a cluster. A pod without a mapping for the
//! port answers what the real API server answers when the dial fails: 503 with a `Status`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::reply::{Body, status};
use crate::server::FakeApiServer;
use crate::state::State;

impl FakeApiServer {
    /// Serves `pods/{pod}:{port}/proxy/…` of `namespace` from `addr` (a loopback server the
    /// test runs). Dropped when the pod is removed.
    pub fn map_pod_port(&self, namespace: &str, pod: &str, port: u16, addr: SocketAddr) {
        self.state()
            .pod_ports
            .insert((namespace.to_owned(), pod.to_owned(), port), addr);
    }
}

/// Where `pod:port` is served, or the error response.
pub(crate) fn target(
    state: &State,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<SocketAddr, Box<Response<Body>>> {
    if !state.workloads.has_pod(namespace, pod) {
        return Err(Box::new(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
        )));
    }
    state
        .pod_ports
        .get(&(namespace.to_owned(), pod.to_owned(), port))
        .copied()
        .ok_or_else(|| Box::new(unreachable_pod(pod, port, "no loopback address mapped")))
}

fn unreachable_pod(pod: &str, port: u16, why: &str) -> Response<Body> {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        &format!("error trying to reach service: pod {pod} port {port}: {why}"),
    )
}

/// Sends `method uri` with `body` to `addr` over HTTP/1.1 and relays the answer.
pub(crate) async fn forward(
    addr: SocketAddr,
    method: Method,
    uri: &str,
    body: Bytes,
) -> Response<Body> {
    let relay = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", addr.to_string())
            .body(Full::new(body))
            .map_err(std::io::Error::other)?;
        let res = send
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        std::io::Result::Ok(Response::from_parts(parts, Full::new(bytes).boxed()))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), relay).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => unreachable_pod("", addr.port(), &e.to_string()),
        Err(_) => unreachable_pod("", addr.port(), "timed out after 5 s"),
    }
}
