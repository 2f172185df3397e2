//! Connections to agents.
//!
//! In `mux` mode each agent gets a few persistent connections; RPCs are multiplexed on them with
//! proxy-assigned msgids and matched back by msgid ([`mux`]). In `per-call` mode each RPC gets a
//! connection of its own, as the modules do ([`per_call`]). Either way a call returns the
//! agent's response frame (msgid as the agent sent it) or an [`UpstreamError`] saying whether a
//! retry elsewhere is allowed.
//!
//! Locks here tolerate poisoning, as agent-pool's do: every critical section is one insert,
//! remove or swap, never left half-done, and a panic in one call's task must not fail every
//! call after it.

mod connect;
mod mux;
mod per_call;
mod queued;
mod readmission;

pub(crate) use connect::UpstreamConfig;
pub(crate) use queued::QueuedBytes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_pool::{Agent, AgentState, EndpointId, Pool, Snapshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::Frame;
use crate::config::UpstreamMode;
use crate::error::UpstreamError;

/// Every agent's connections.
pub(crate) struct Upstreams {
    config: UpstreamConfig,
    agents: Mutex<HashMap<EndpointId, Arc<mux::AgentConns>>>,
    /// Cancelled when the proxy exits: ends every connection task.
    exit: CancellationToken,
}

impl Upstreams {
    pub(crate) fn new(config: UpstreamConfig, exit: CancellationToken) -> Self {
        Self {
            config,
            agents: Mutex::new(HashMap::new()),
            exit,
        }
    }

    fn conns(&self, agent: &Agent) -> Arc<mux::AgentConns> {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = agents.get(agent.id())
            && c.address() == agent.address()
        {
            return c.clone();
        }
        // New agent, or the same id at a new address: fresh connections.
        let c = Arc::new(mux::AgentConns::new(
            agent.address().clone(),
            &self.config,
            &self.exit,
        ));
        if let Some(old) = agents.insert(agent.id().clone(), c.clone()) {
            old.close();
        }
        c
    }

    /// Sends a request to `agent` (RequestID replaced by `request_id` if given) and waits for
    /// its response until `deadline`.
    pub(crate) async fn call(
        &self,
        agent: &Agent,
        request: &Frame,
        request_id: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Frame, UpstreamError> {
        match self.config.mode {
            UpstreamMode::Mux => {
                let conn = self.conns(agent).get(deadline).await?;
                conn.call(request, request_id, deadline).await
            }
            UpstreamMode::PerCall => {
                per_call::call(agent.address(), &self.config, request, request_id, deadline).await
            }
        }
    }

    /// Follows the membership: closes the connections of agents no longer in the pool, and in
    /// `mux` mode opens the persistent connections of agents that take work ahead of their
    /// first RPC (so no module call pays for a connect; a joining agent's are open by the end
    /// of its join delay).
    pub(crate) fn sync(&self, snapshot: &Snapshot) {
        self.prune(snapshot);
        if self.config.mode != UpstreamMode::Mux {
            return;
        }
        for agent in snapshot.agents() {
            if matches!(
                agent.state(),
                AgentState::Ready | AgentState::Joining | AgentState::Terminating
            ) {
                self.conns(agent).warm();
            }
        }
    }

    /// Keeps the connections in step with `pool` until `exit`: checked every 100 ms, synced
    /// when the snapshot changed and every second (to reopen connections agents closed).
    /// Agents in a run of failures are probed at each check ([`readmission`]).
    pub(crate) async fn follow(&self, pool: &Pool, exit: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let (mut seen, mut synced) = (u64::MAX, Instant::now());
        loop {
            tokio::select! {
                () = exit.cancelled() => break,
                _ = every.tick() => {}
            }
            let snapshot = pool.snapshot();
            if snapshot.version() != seen || synced.elapsed() >= Duration::from_secs(1) {
                seen = snapshot.version();
                synced = Instant::now();
                self.sync(&snapshot);
            }
            self.probe_suspects(&snapshot).await;
        }
    }

    /// Closes the connections of agents no longer in the pool.
    fn prune(&self, snapshot: &Snapshot) {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        agents.retain(|id, conns| {
            let keep = snapshot.agents().iter().any(|a| a.id() == id);
            if !keep {
                conns.close();
            }
            keep
        });
    }
}
