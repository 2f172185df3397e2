//! DNS: resolves `NAME:PORT` (A and AAAA, through the system resolver) every few seconds, as
//! for a headless Service whose records are the ready agent pods. Agents appear and leave as
//! the records do; a failed lookup keeps the last answer.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;

use crate::{Address, Endpoint, Update, Updates};

/// Resolves `name:port` now and every `every` after: yields a `Reset` whenever the set of
/// addresses changes (each agent's id is its address). Never ends.
pub fn dns(name: String, port: u16, every: Duration) -> Updates {
    struct State {
        name: String,
        port: u16,
        every: Duration,
        first: bool,
        last: Option<BTreeSet<SocketAddr>>,
        failing: bool,
    }
    let state = State {
        name,
        port,
        every,
        first: true,
        last: None,
        failing: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if !s.first {
                tokio::time::sleep(s.every).await;
            }
            s.first = false;
            let lookup = tokio::net::lookup_host((s.name.as_str(), s.port));
            // getaddrinfo can hang on a broken resolver: bound each attempt.
            let limit = s.every.max(Duration::from_secs(5));
            let result = match tokio::time::timeout(limit, lookup).await {
                Ok(Ok(addrs)) => Ok(addrs.collect::<BTreeSet<_>>()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("lookup timed out".to_owned()),
            };
            match result {
                Ok(addrs) => {
                    s.failing = false;
                    if s.last.as_ref() == Some(&addrs) {
                        continue;
                    }
                    tracing::info!(name = %s.name, agents = addrs.len(), "DNS membership changed");
                    let endpoints = addrs.iter().map(|a| Endpoint::new(Address::Tcp(*a))).collect();
                    s.last = Some(addrs);
                    return Some((Update::Reset(endpoints), s));
                }
                Err(error) => {
                    if !s.failing {
                        tracing::warn!(name = %s.name, %error, "DNS lookup failed; keeping the last answer");
                    }
                    s.failing = true;
                }
            }
        }
    })
    .boxed()
}
