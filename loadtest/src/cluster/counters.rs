//! The agents' and proxies' counters, read through the API server's pod proxy: each agent
//! pod's `/stats` when the drive starts (zero for a pod that appears during it), just before a
//! step deletes it and, while a gracefully deleted pod still answers, every 200 ms after (it
//! keeps taking the UpdateRequests of the IDs it issued), and at the end; each proxy pod's
//! `/metrics` at the start, before its deletion and at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::api::{Cluster, PodInfo};
use crate::agent::AgentStats;
use crate::drive::DriveReport;
use crate::prometheus::sum_counter;

/// One agent pod seen during the run; its index is its place in [`Agents::pods`].
pub(crate) struct AgentPod {
    pub(crate) name: String,
    ip: Option<IpAddr>,
    before: Option<AgentStats>,
    /// The last counters read; kept current by the poller after a graceful delete.
    last: Arc<Mutex<Option<AgentStats>>>,
    pub(crate) deleted: bool,
    poller: Option<JoinHandle<()>>,
}

/// Every agent pod seen, in the order first seen (sorted by name at the start).
pub(crate) struct Agents {
    cluster: Cluster,
    port: u16,
    pub(crate) pods: Vec<AgentPod>,
    /// PreRequests per agent at the last `snapshot` step.
    snapshot: Option<Vec<Option<u64>>>,
}

async fn read_stats(cluster: &Cluster, pod: &str, port: u16) -> Result<AgentStats, String> {
    let text = cluster
        .pod_http(http::Method::GET, pod, port, "/stats")
        .await
        .map_err(|e| format!("{e:#}"))?;
    serde_json::from_str(&text).map_err(|e| format!("bad /stats JSON: {e}"))
}

impl Agents {
    pub(crate) fn new(cluster: Cluster, port: u16) -> Agents {
        Agents {
            cluster,
            port,
            pods: Vec::new(),
            snapshot: None,
        }
    }

    /// Lists the agent pods and adds the ones not seen yet: their counters now as `before` when
    /// `at_start`, else zero (a pod created during the drive). Returns the names added.
    pub(crate) async fn discover(&mut self, at_start: bool) -> anyhow::Result<Vec<String>> {
        let listed = self.cluster.list(&self.cluster.agent_selector).await?;
        let mut added = Vec::new();
        for p in listed {
            if p.deleting || self.pods.iter().any(|a| a.name == p.name) {
                continue;
            }
            let before = if at_start {
                read_stats(&self.cluster, &p.name, self.port).await.ok()
            } else {
                Some(AgentStats::default())
            };
            added.push(p.name.clone());
            self.pods.push(AgentPod {
                name: p.name,
                ip: p.ip,
                before,
                last: Default::default(),
                deleted: false,
                poller: None,
            });
        }
        Ok(added)
    }

    /// Index and name of agent `i`, or an error naming the agents known.
    fn pod(&self, i: usize) -> anyhow::Result<&AgentPod> {
        self.pods.get(i).ok_or_else(|| {
            anyhow::anyhow!(
                "no agent {i}: {} agent pods seen ({})",
                self.pods.len(),
                self.names().join(", ")
            )
        })
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.name.clone()).collect()
    }

    /// Reads agent `i`'s counters, then deletes its pod with `grace` (see
    /// [`Cluster::delete`]); after a graceful delete its counters are polled while it answers.
    pub(crate) async fn delete(&mut self, i: usize, grace: Option<u32>) -> anyhow::Result<String> {
        let (cluster, port) = (self.cluster.clone(), self.port);
        let pod = self.pod(i)?;
        if pod.deleted {
            // terminate, remove and stop-agent are three steps locally, one deletion here.
            return Ok(format!(
                "pod {} already deleted by an earlier step",
                pod.name
            ));
        }
        let name = pod.name.clone();
        let last = pod.last.clone();
        if let Ok(s) = read_stats(&cluster, &name, port).await {
            *last.lock().expect("not poisoned") = Some(s);
        }
        cluster.delete(&name, grace).await?;
        let pod = &mut self.pods[i];
        pod.deleted = true;
        if grace != Some(0) {
            pod.poller = Some(poll(cluster, name, port, last));
        }
        Ok(format!(
            "pod {} deleted ({})",
            self.pods[i].name,
            match grace {
                Some(0) => "gracePeriodSeconds 0: killed".to_string(),
                Some(g) => format!("gracePeriodSeconds {g}"),
                None => "graceful: preStop runs, pending updates still delivered".to_string(),
            }
        ))
    }

    /// Keeps every agent's counters current (read every 200 ms while it answers): before a
    /// scale down, whose victims the Deployment chooses.
    pub(crate) async fn watch_all(&mut self) {
        for p in &mut self.pods {
            if p.deleted || p.poller.is_some() {
                continue;
            }
            if let Ok(s) = read_stats(&self.cluster, &p.name, self.port).await {
                *p.last.lock().expect("not poisoned") = Some(s);
            }
            p.poller = Some(poll(
                self.cluster.clone(),
                p.name.clone(),
                self.port,
                p.last.clone(),
            ));
        }
    }

    /// The oldest serving agent (the one a rollout replaces first).
    pub(crate) async fn oldest_serving(&self) -> anyhow::Result<usize> {
        let serving: Vec<PodInfo> = self.cluster.list(&self.cluster.agent_selector).await?;
        self.pods
            .iter()
            .position(|a| !a.deleted && serving.iter().any(|p| p.name == a.name && p.serving()))
            .ok_or_else(|| anyhow::anyhow!("no serving agent pod to replace"))
    }

    /// `POST /fault?QUERY` on agent `i`.
    pub(crate) async fn fault(&self, i: usize, query: &str) -> anyhow::Result<String> {
        let pod = self.pod(i)?;
        self.cluster
            .pod_http(
                http::Method::POST,
                &pod.name,
                self.port,
                &format!("/fault?{query}"),
            )
            .await?;
        Ok(format!("pod {}: fault {query}", pod.name))
    }

    /// Counters now, or the last read for a pod that no longer answers.
    async fn now(&self, pod: &AgentPod) -> Result<AgentStats, String> {
        let read = if pod.deleted && pod.poller.as_ref().is_none_or(|p| p.is_finished()) {
            Err("deleted".to_string())
        } else {
            read_stats(&self.cluster, &pod.name, self.port).await
        };
        match read {
            Ok(s) => Ok(s),
            Err(e) => pod.last.lock().expect("not poisoned").clone().ok_or(e),
        }
    }

    /// `snapshot`: every agent's PreRequests now.
    pub(crate) async fn snapshot(&mut self) -> String {
        let mut snap = Vec::new();
        for p in &self.pods {
            snap.push(self.now(p).await.ok().map(|s| s.prerequests));
        }
        let line = format!("PreRequests per agent {snap:?}");
        self.snapshot = Some(snap);
        line
    }

    /// Fills `report`'s agents section: for every agent pod seen, its counters at the end (or
    /// the last read before it went away) minus those at its start. Agents are named by pod IP
    /// and admin port (0.0.0.0 when the pod had no IP).
    pub(crate) async fn read_into(&mut self, report: &mut DriveReport) {
        for p in &mut self.pods {
            if let Some(poller) = p.poller.take() {
                // A pod still terminating is read once more below, then no longer.
                poller.abort();
            }
        }
        let mut stats = Vec::new();
        for p in &self.pods {
            let after = if p.deleted {
                p.last
                    .lock()
                    .expect("not poisoned")
                    .clone()
                    .ok_or_else(|| "counters unreadable before the deletion".to_string())
            } else {
                self.now(p).await
            };
            let d = match (&p.before, after) {
                (Some(b), Ok(af)) => Ok(af.since(b)),
                (None, Ok(_)) => Err("counters unreadable at the start".to_string()),
                (_, Err(e)) => Err(e),
            };
            let ip = p.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            stats.push((SocketAddr::new(ip, self.port), d));
        }
        report.set_agents(stats);
    }

    /// PreRequests since the last `snapshot` of every agent still serving, `(index, count)`;
    /// `None` without a snapshot.
    pub(crate) async fn window_counts(&self) -> anyhow::Result<Option<Vec<(usize, u64)>>> {
        let Some(snap) = &self.snapshot else {
            return Ok(None);
        };
        let listed = self.cluster.list(&self.cluster.agent_selector).await?;
        let mut counts = Vec::new();
        for (i, p) in self.pods.iter().enumerate() {
            if p.deleted || !listed.iter().any(|l| l.name == p.name && l.serving()) {
                continue;
            }
            let Ok(s) = self.now(p).await else { continue };
            let base = snap.get(i).copied().flatten().unwrap_or(0);
            counts.push((i, s.prerequests.saturating_sub(base)));
        }
        Ok(Some(counts))
    }
}

/// Reads `pod`'s counters into `last` every 200 ms until three reads in a row fail (it is
/// gone).
fn poll(
    cluster: Cluster,
    pod: String,
    port: u16,
    last: Arc<Mutex<Option<AgentStats>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut misses = 0;
        while misses < 3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match read_stats(&cluster, &pod, port).await {
                Ok(s) => {
                    misses = 0;
                    *last.lock().expect("not poisoned") = Some(s);
                }
                Err(_) => misses += 1,
            }
        }
    })
}

/// One proxy pod seen during the run.
struct ProxyPod {
    name: String,
    before: Option<String>,
    last: Option<String>,
    deleted: bool,
}

/// Every proxy pod seen, in the order first seen (sorted by name at the start).
pub(crate) struct Proxies {
    cluster: Cluster,
    port: u16,
    pods: Vec<ProxyPod>,
}

impl Proxies {
    pub(crate) fn new(cluster: Cluster, port: u16) -> Proxies {
        Proxies {
            cluster,
            port,
            pods: Vec::new(),
        }
    }

    async fn metrics(&self, pod: &str) -> Option<String> {
        self.cluster
            .pod_http(http::Method::GET, pod, self.port, "/metrics")
            .await
            .ok()
    }

    /// Lists the proxy pods, adds unknown ones (reading their `/metrics` now); returns how many
    /// serve.
    pub(crate) async fn discover(&mut self) -> anyhow::Result<usize> {
        let listed = self.cluster.list(&self.cluster.proxy_selector).await?;
        for p in &listed {
            if p.deleting || self.pods.iter().any(|k| k.name == p.name) {
                continue;
            }
            let before = self.metrics(&p.name).await;
            self.pods.push(ProxyPod {
                name: p.name.clone(),
                before,
                last: None,
                deleted: false,
            });
        }
        Ok(listed.iter().filter(|p| p.serving()).count())
    }

    /// Reads proxy `i`'s `/metrics`, then deletes its pod gracefully: its preStop hook runs
    /// `sigsci-proxy drain`.
    pub(crate) async fn delete(&mut self, i: usize) -> anyhow::Result<String> {
        let known: Vec<String> = self.pods.iter().map(|p| p.name.clone()).collect();
        let pod = self.pods.get(i).ok_or_else(|| {
            anyhow::anyhow!(
                "no proxy {i}: {} proxy pods seen ({})",
                known.len(),
                known.join(", ")
            )
        })?;
        if pod.deleted {
            // terminate, remove and stop-agent are three steps locally, one deletion here.
            return Ok(format!(
                "pod {} already deleted by an earlier step",
                pod.name
            ));
        }
        let name = pod.name.clone();
        let last = self.metrics(&name).await;
        self.cluster.delete(&name, None).await?;
        let pod = &mut self.pods[i];
        pod.last = last;
        pod.deleted = true;
        Ok(format!(
            "pod {name} deleted gracefully (preStop: sigsci-proxy drain)"
        ))
    }

    /// One line per proxy pod: RPCs it finished and what it left uninspected during the run,
    /// from its `/metrics` (`sigsci_proxy_rpcs_total`, `sigsci_proxy_uninspected_total`).
    pub(crate) async fn lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.pods {
            let after = match (p.deleted, &p.last) {
                (true, last) => last.clone(),
                (false, _) => self.metrics(&p.name).await,
            };
            let Some(after) = after else {
                out.push(format!("proxy pod {}: /metrics unreadable", p.name));
                continue;
            };
            let before = p.before.as_deref().unwrap_or("");
            let delta = |name: &str| sum_counter(&after, name) - sum_counter(before, name);
            let series: Vec<&str> = after
                .lines()
                .filter(|l| l.starts_with("sigsci_proxy_uninspected_total") && !l.ends_with(" 0"))
                .collect();
            out.push(format!(
                "proxy pod {}{}: {:.0} RPCs, {:.0} uninspected during the run (totals: {})",
                p.name,
                if p.deleted { " (deleted)" } else { "" },
                delta("sigsci_proxy_rpcs_total"),
                delta("sigsci_proxy_uninspected_total"),
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
