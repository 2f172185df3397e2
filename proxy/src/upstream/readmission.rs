//! The readmission probe: the proxy's half of passive health (agent-pool's `health.rs` ejects
//! and readmits; only the proxy can connect). Agents in a run of failures are probed at each
//! check of [`Upstreams::follow`]: one found unreachable that accepts a connection again is
//! readmitted on trial with a fresh latency estimate, within 100 ms of listening instead of
//! after its backoff and penalty.

use agent_pool::{Agent, Snapshot};
use tokio::time::Instant;

use super::Upstreams;
use super::connect::connect;
use crate::config::UpstreamMode;

impl Upstreams {
    /// Probes every suspect agent of `snapshot` at once and tells each what was found.
    pub(super) async fn probe_suspects(&self, snapshot: &Snapshot) {
        let fresh = snapshot.typical_latency();
        let probes = snapshot
            .agents()
            .iter()
            .filter(|a| a.is_suspect())
            .map(|a| async move {
                a.probed(self.probe(a).await, fresh);
            });
        futures::future::join_all(probes).await;
    }

    /// Whether `agent` accepts a connection now (readmission probe of a suspect agent: one
    /// found unreachable is readmitted on trial when a connect succeeds again). In `mux` mode
    /// see `AgentConns::probe` in mux.rs: live connections are not taken as proof that the
    /// path works.
    async fn probe(&self, agent: &Agent) -> bool {
        match self.config.mode {
            UpstreamMode::Mux => self.conns(agent).probe().await,
            UpstreamMode::PerCall => {
                let deadline = Instant::now() + self.config.connect_timeout;
                connect(agent.address(), deadline).await.is_ok()
            }
        }
    }
}
