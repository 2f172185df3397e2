//! The agents' side of a run, read by the orchestrator rather than the drive because agents
//! come and go during a scenario: counters before and after (or just before a scenario stopped
//! an agent), PreRequest shares over the window after a `snapshot` step, and the proxies' own
//! count of uninspected calls by reason.

use crate::agent::AgentStats;
use crate::drive::DriveReport;
use crate::processes::{ChildProcesses, FileState};
use crate::scenario::Expect;

async fn read_stats(admin: std::net::SocketAddr) -> Result<AgentStats, String> {
    let body = crate::http::get(admin, "/stats")
        .await
        .map_err(|e| format!("{e:#}"))?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

impl ChildProcesses {
    /// Reads every agent's counters as the drive starts.
    pub(crate) async fn read_before(&mut self) {
        let reads = self.agents.iter().map(|a| read_stats(a.admin));
        let all = futures::future::join_all(reads).await;
        for (a, s) in self.agents.iter_mut().zip(all) {
            a.before = s.ok();
        }
    }

    /// Fills `report`'s agents section: for every agent ever started, its counters now (or
    /// when a scenario stopped it) minus those at its start or the drive's.
    pub(crate) async fn read_agents_into(&self, report: &mut DriveReport) {
        let reads = self.agents.iter().map(|a| async move {
            let after = match &a.last {
                Some(s) => Ok(s.clone()),
                None => read_stats(a.admin).await,
            };
            let d = match (&a.before, after) {
                (Some(b), Ok(af)) => Ok(af.since(b)),
                (None, Ok(_)) => Err("counters unreadable at the start".to_string()),
                (_, Err(e)) => Err(e),
            };
            (a.admin, d)
        });
        let stats = futures::future::join_all(reads).await;
        report.set_agents(stats);
    }

    /// Judges `window_min_fair`/`window_max_fair`: PreRequests since the last `snapshot`, per
    /// agent ready at the end, against 1 / (agents ready). Returns the lines to log.
    pub(crate) async fn window_shares(
        &self,
        e: &Expect,
        failures: &mut Vec<String>,
    ) -> Vec<String> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let members: Vec<_> = self
            .agents
            .iter()
            .filter(|a| a.state == FileState::Ready && !a.expect_exit)
            .collect();
        let reads = members.iter().map(|a| read_stats(a.admin));
        let now = futures::future::join_all(reads).await;
        let mut counts = Vec::new();
        for (a, s) in members.iter().zip(now) {
            let Ok(s) = s else { continue };
            let base = snap.get(a.index).copied().flatten().unwrap_or(0);
            counts.push((a.index, s.prerequests.saturating_sub(base)));
        }
        crate::judge::window_shares(&counts, e, failures)
    }

    /// Each proxy's `sigsci_proxy_uninspected_total` series (why calls went uninspected), if it
    /// exports them.
    pub(crate) async fn proxy_uninspected(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in self.fronts.iter().enumerate() {
            let Some(admin) = f.admin else { continue };
            let Ok(body) = crate::http::get(admin, "/metrics").await else {
                continue;
            };
            let text = String::from_utf8_lossy(&body);
            let series: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("sigsci_proxy_uninspected_total") && !l.ends_with(" 0"))
                .collect();
            out.push(format!(
                "proxy {i} uninspected_total: {}",
                if series.is_empty() {
                    "none".to_string()
                } else {
                    series.join("; ")
                }
            ));
        }
        out
    }
}
