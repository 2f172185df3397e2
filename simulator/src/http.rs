//! Minimal HTTP/1 plumbing on hyper 1: a server loop for the admin endpoints, and a client for
//! reading other processes' admin endpoints (agents' `/stats`, the proxy's `/readyz`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// An admin response body.
pub type Body = Full<Bytes>;

/// Builds a response with a status and a body.
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// Serves `handler` on `listener` until `shutdown` fires.
pub async fn serve<F, Fut>(listener: TcpListener, shutdown: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "Admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let span = tracing::debug_span!("http_conn", client.addr = %peer);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            .instrument(span),
        );
    }
}

/// Sends one request to `addr` and returns status and body, within `timeout`.
pub async fn call(
    addr: SocketAddr,
    method: hyper::Method,
    path_and_query: &str,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let fut = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn.in_current_span());
        let req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        drop(sender);
        conn.abort();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        anyhow::anyhow!("http://{addr}{path_and_query}: no answer within {timeout:?}")
    })?
}

/// `GET` returning the body of a 2xx answer.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    let (status, body) = call(addr, hyper::Method::GET, path, Duration::from_secs(2)).await?;
    anyhow::ensure!(status.is_success(), "GET http://{addr}{path}: {status}");
    Ok(body)
}

/// `POST` with an empty body, returning the body of a 2xx answer.
pub async fn post(addr: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    let (status, body) = call(addr, hyper::Method::POST, path, Duration::from_secs(2)).await?;
    anyhow::ensure!(status.is_success(), "POST http://{addr}{path}: {status}");
    Ok(body)
}
