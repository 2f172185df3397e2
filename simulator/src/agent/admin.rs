//! The simulator's admin HTTP endpoints.
//!
//! - `GET  /stats`    counters as JSON ([`AgentStats`](super::AgentStats))
//! - `GET  /metrics`  the same counters as Prometheus text
//! - `GET  /healthz`  200 while serving
//! - `GET  /startup`  503 until the startup delay has passed, then 200 (also on the startup
//!   probe listener, where it is the only route)
//! - `GET  /fault`    active faults as JSON
//! - `POST /fault?refuse=1&hangup=1&reset=1&error=1&stall=1&delay=5ms&slow=4&exit_after=N&clear=1`
//!   change faults (only the keys given; `clear=1` first resets all; `exit_after=off`)
//! - `POST /shutdown` graceful stop (the process then prints its stats and exits 0)

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::config::Faults;
use super::server::Shared;
use crate::http::{Body, reply};

pub(super) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => reply(
            StatusCode::OK,
            JSON,
            serde_json::to_vec(&shared.stats()).expect("json"),
        ),
        (&Method::GET, "/metrics") => reply(StatusCode::OK, TEXT, shared.stats().to_prometheus()),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n"),
        (&Method::GET, "/startup") => startup(&shared),
        (&Method::GET, "/fault") => reply(
            StatusCode::OK,
            JSON,
            serde_json::to_vec(&shared.faults()).expect("json"),
        ),
        (&Method::POST, "/fault") => {
            match apply_query(shared.faults(), req.uri().query().unwrap_or("")) {
                Ok(f) => {
                    tracing::info!(faults = ?f, "Faults changed");
                    shared.set_faults(f.clone());
                    reply(StatusCode::OK, JSON, serde_json::to_vec(&f).expect("json"))
                }
                Err(e) => reply(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
            }
        }
        (&Method::POST, "/shutdown") => {
            shared.shutdown_requested.cancel();
            reply(StatusCode::OK, TEXT, "shutting down\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "routes: GET /stats /metrics /healthz /startup /fault, POST /fault /shutdown\n",
        ),
    }
}

/// The startup probe listener's only route: `GET /startup`.
pub(super) async fn startup_probe(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/startup") => startup(&shared),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "routes: GET /startup\n",
        ),
    }
}

fn startup(shared: &Shared) -> Response<Body> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if shared.started() {
        reply(StatusCode::OK, TEXT, "started\n")
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "rules not loaded yet\n",
        )
    }
}

/// Applies `key=value` pairs of a `/fault` query to `f`.
pub(crate) fn apply_query(mut f: Faults, query: &str) -> Result<Faults, String> {
    let flag = |v: &str| match v {
        "1" | "true" | "on" | "" => Ok(true),
        "0" | "false" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean (1/0)")),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "clear" if flag(v)? => {
                f = Faults {
                    slow: 1.0,
                    ..Faults::default()
                }
            }
            "clear" => {}
            "refuse" => f.refuse = flag(v)?,
            "hangup" => f.hangup = flag(v)?,
            "reset" => f.reset = flag(v)?,
            "error" => f.error = flag(v)?,
            "stall" => f.stall = flag(v)?,
            "delay" => f.delay = crate::units::parse_duration(v)?,
            "slow" => {
                f.slow = v
                    .parse()
                    .map_err(|_| format!("slow={v:?} is not a number"))?;
                if !(f.slow.is_finite() && f.slow > 0.0) {
                    return Err("slow must be a positive factor".into());
                }
            }
            "exit_after" => {
                f.exit_after = match v {
                    "off" | "" => None,
                    n => Some(
                        n.parse()
                            .map_err(|_| format!("exit_after={n:?} is not a count"))?,
                    ),
                }
            }
            other => return Err(format!("unknown fault {other:?}")),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fault_queries_change_only_the_keys_given() {
        let f = apply_query(
            Faults {
                slow: 1.0,
                ..Faults::default()
            },
            "refuse=1&delay=5ms",
        )
        .unwrap();
        assert!(f.refuse && !f.reset);
        assert_eq!(f.delay, Duration::from_millis(5));
        let f = apply_query(f, "exit_after=3&slow=2.5").unwrap();
        assert_eq!((f.exit_after, f.slow, f.refuse), (Some(3), 2.5, true));
        let f = apply_query(f, "clear=1").unwrap();
        assert_eq!(
            f,
            Faults {
                slow: 1.0,
                ..Faults::default()
            }
        );
        assert!(apply_query(f, "bogus=1").is_err());
    }
}
