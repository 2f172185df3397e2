//! The handle a test holds: the fake's address, a client for it, and the switches that apply
//! to every route (stop, fail, the request log). The routes (`routes.rs`) start and restart it;
//! each kind's own test API is in its module (`endpointslices.rs`, `workloads.rs`, ...).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use http::StatusCode;
use tokio::task::JoinHandle;

use crate::state::{Logged, State, lock};

/// The fake server. Stops (connections cut) when dropped.
pub struct FakeApiServer {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) accept: Option<JoinHandle<()>>,
}

impl FakeApiServer {
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

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
