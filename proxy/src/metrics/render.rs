//! The `/metrics` page: the recorder's output, then the series derived from the pool's snapshot
//! at scrape time (per agent, labelled by address, and the autoscaling hints), written by hand
//! because they are read from the membership when scraped, not recorded as events: a departed
//! agent's series disappear with it instead of lingering in the recorder.

use std::fmt::Write as _;

use agent_pool::{AgentState, Pool};
use metrics_exporter_prometheus::PrometheusHandle;

fn state_label(state: AgentState) -> &'static str {
    match state {
        AgentState::Ready => "ready",
        AgentState::Joining => "joining",
        AgentState::Terminating => "terminating",
        AgentState::Ejected => "ejected",
        AgentState::Gone => "gone",
    }
}

/// The whole `/metrics` page: recorder output, then pool-derived gauges.
pub(crate) fn render(handle: &PrometheusHandle, pool: &Pool) -> String {
    handle.run_upkeep();
    let mut out = handle.render();
    let hints = pool.hints();
    let snapshot = pool.snapshot();
    // Agents' worth of work this replica sends, unrounded: the autoscaler sums it over the
    // replicas and rounds once.
    let _ = writeln!(
        out,
        "# HELP sigsci_proxy_agent_demand Agents' worth of work this replica sends, unrounded: sum it over replicas and round up once.\n\
         # TYPE sigsci_proxy_agent_demand gauge\nsigsci_proxy_agent_demand {}",
        hints.demand
    );
    let _ = writeln!(
        out,
        "# HELP sigsci_proxy_agents_recommended Agents this replica's load alone needs, rounded up (do not sum over replicas: sum sigsci_proxy_agent_demand).\n\
         # TYPE sigsci_proxy_agents_recommended gauge\nsigsci_proxy_agents_recommended {}",
        hints.recommended
    );
    let _ = writeln!(
        out,
        "# HELP sigsci_proxy_pool_utilization Load of the pool against its target (1 = at target).\n\
         # TYPE sigsci_proxy_pool_utilization gauge\nsigsci_proxy_pool_utilization {}",
        hints.utilization
    );
    let _ = writeln!(
        out,
        "# HELP sigsci_proxy_agents_ready Agents that accept new work now (ready, not ejected).\n\
         # TYPE sigsci_proxy_agents_ready gauge\nsigsci_proxy_agents_ready {}",
        snapshot.ready_len()
    );
    render_agents(&mut out, snapshot.agents());
    out
}

/// The per-agent series, labelled by address.
fn render_agents(out: &mut String, agents: &[std::sync::Arc<agent_pool::Agent>]) {
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&agent_pool::AgentStats) -> f64,
    );
    let series: [Series; 6] = [
        (
            "sigsci_proxy_agent_outstanding",
            "gauge",
            "RPCs in flight on this agent.",
            |s| s.outstanding as f64,
        ),
        (
            "sigsci_proxy_agent_concurrency_limit",
            "gauge",
            "Calls this replica keeps in flight on this agent at most: its learned concurrency limit.",
            |s| s.limit.floor(),
        ),
        (
            "sigsci_proxy_agent_latency_ewma_seconds",
            "gauge",
            "Peak-EWMA latency of this agent (what the picker weighs), in seconds.",
            |s| s.latency_ewma_ms / 1e3,
        ),
        (
            "sigsci_proxy_agent_requests_total",
            "counter",
            "Requests started on this agent (picked, or routed by affinity).",
            |s| s.started as f64,
        ),
        (
            "sigsci_proxy_agent_failures_total",
            "counter",
            "Requests on this agent that failed (connect, broken, timeout, error answer).",
            |s| s.failures as f64,
        ),
        (
            "sigsci_proxy_agent_ejections_total",
            "counter",
            "Times passive health ejected this agent.",
            |s| s.ejections as f64,
        ),
    ];
    let stats: Vec<_> = agents.iter().map(|a| a.stats()).collect();
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &stats {
            let _ = writeln!(out, "{name}{{agent=\"{}\"}} {}", s.address, value(s));
        }
    }
    let _ = writeln!(
        out,
        "# HELP sigsci_proxy_agent_state 1 for the state each known agent is in (ready, joining, terminating, ejected, gone), else 0.\n\
         # TYPE sigsci_proxy_agent_state gauge"
    );
    for s in &stats {
        for state in [
            AgentState::Ready,
            AgentState::Joining,
            AgentState::Terminating,
            AgentState::Ejected,
            AgentState::Gone,
        ] {
            let _ = writeln!(
                out,
                "sigsci_proxy_agent_state{{agent=\"{}\",state=\"{}\"}} {}",
                s.address,
                state_label(state),
                u8::from(s.state == state)
            );
        }
    }
}
