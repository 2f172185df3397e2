//! EndpointSlices: list, and watch with the real protocol — newline-delimited events (ADDED,
//! MODIFIED, DELETED, BOOKMARK when `allowWatchBookmarks=true`), the history after the
//! requested resourceVersion replayed first. A watch from a compacted resourceVersion gets what
//! the real API server sends: HTTP 200 and one ERROR event carrying a `Status` with code 410,
//! reason `Expired`. The test can drop watch streams, send 410 on them, and change objects
//! without telling watchers (an event lost in a gap).

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::query::selects;
use crate::reply::{Body, full, key_of, to_line};
use crate::server::FakeApiServer;
use crate::state::{Change, State, Watcher};

impl FakeApiServer {
    /// Creates or replaces a slice (namespace and name from its metadata) and tells watchers.
    pub fn apply(&self, slice: EndpointSlice) {
        self.change(slice, false, true);
    }

    /// Deletes a slice and tells watchers.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut state = self.state();
        let Some(mut slice) = state
            .slices
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
        let mut state = self.state();
        state.slices.compacted = state.rv;
    }

    /// Forgets the history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut state = self.state();
        state.slices.compacted = state.rv;
        state.slices.history.clear();
    }

    /// Ends every open watch stream cleanly (as the API server does at its watch timeout).
    pub fn drop_watches(&self) {
        self.state().slices.watchers.clear();
    }

    /// Sends an ERROR event with a 410 `Expired` Status on every open watch, then ends them.
    pub fn expire_watches(&self) {
        let mut state = self.state();
        let line = gone_line(state.rv, state.slices.compacted);
        for watcher in state.slices.watchers.drain(..) {
            let _ = watcher.tx.unbounded_send(line.clone());
        }
    }

    /// Sends a BOOKMARK at the current resourceVersion to watches that asked for bookmarks.
    pub fn bookmark(&self) {
        let state = self.state();
        let line = to_line(&json!({
            "type": "BOOKMARK",
            "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                       "metadata": {"resourceVersion": state.rv.to_string()}},
        }));
        for watcher in state.slices.watchers.iter().filter(|w| w.bookmarks) {
            let _ = watcher.tx.unbounded_send(line.clone());
        }
    }

    /// Waits (up to 5 s, else panics) until a watch stream is open: the watcher lists first and
    /// watches after, so a test that wants to cut a live watch waits for it.
    pub async fn watching(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if self
                .state()
                .slices
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

    fn change(&self, mut slice: EndpointSlice, quiet: bool, keep_history: bool) {
        let key = key_of(&slice.metadata);
        let mut state = self.state();
        state.rv += 1;
        slice.metadata.resource_version = Some(state.rv.to_string());
        let kind = if state.slices.slices.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.slices.slices.insert(key, slice.clone());
        if !quiet {
            record(&mut state, kind, &slice, keep_history);
        }
    }
}

fn record(state: &mut State, kind: &str, slice: &EndpointSlice, keep_history: bool) {
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    let labels = slice.metadata.labels.clone();
    let line = to_line(&json!({"type": kind, "object": slice}));
    state.slices.watchers.retain(|w| {
        if w.namespace != namespace || !selects(&w.selector, labels.as_ref()) {
            return true;
        }
        w.tx.unbounded_send(line.clone()).is_ok()
    });
    if keep_history {
        let rv = state.rv;
        state.slices.history.push(Change {
            rv,
            namespace,
            labels,
            line,
        });
    }
}

fn gone_line(rv: u64, compacted: u64) -> Bytes {
    to_line(&json!({
        "type": "ERROR",
        "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("too old resource version: {rv} ({compacted})"),
                   "reason": "Expired", "code": 410},
    }))
}

/// `GET …/endpointslices`: an `EndpointSliceList` with the current resourceVersion.
pub(crate) fn list(
    state: &State,
    namespace: &str,
    selector: &[(String, String)],
) -> Response<Body> {
    let items: Vec<&EndpointSlice> = state
        .slices
        .slices
        .iter()
        .filter(|((ns, _), s)| ns == namespace && selects(selector, s.metadata.labels.as_ref()))
        .map(|(_, s)| s)
        .collect();
    let list = json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                      "metadata": {"resourceVersion": state.rv.to_string()}, "items": items});
    full(StatusCode::OK, &list)
}

/// `GET …/endpointslices?watch=1`: the history after `resourceVersion`, then live events.
pub(crate) fn watch(
    state: &mut State,
    namespace: String,
    selector: Vec<(String, String)>,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let from: u64 = match query.get("resourceVersion").map(|v| v.parse()) {
        Some(Ok(rv)) => rv,
        _ => {
            eprintln!("fake apiserver: watch without a numeric resourceVersion: {query:?}");
            0
        }
    };
    let (tx, rx) = mpsc::unbounded();
    if from < state.slices.compacted {
        let _ = tx.unbounded_send(gone_line(from, state.slices.compacted));
        drop(tx);
    } else {
        for change in &state.slices.history {
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
        state.slices.watchers.push(Watcher {
            namespace,
            selector,
            bookmarks,
            tx,
        });
    }
    let body = StreamBody::new(rx.map(|line| Ok::<_, Infallible>(Frame::data(line))));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .expect("response")
}
