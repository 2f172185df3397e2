//! A scenario's timeline mapped onto a cluster, checked before anything is touched: each step
//! becomes what Kubernetes does to a pod (a graceful delete runs the preStop hook — the
//! agent's drain sleep, the proxy's `sigsci-proxy drain` — a delete with grace 0 is a kill, a
//! scale patch adds agents), or is rejected with the step named when a cluster has no
//! equivalent (stopping a process with SIGSTOP, marking a pod ready from outside).

use std::time::Duration;

use crate::scenario::{Action, Scenario, Step};

/// What a step does in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `add`: the agent Deployment's replicas + `count`, then wait until they serve.
    ScaleUp(usize),
    /// `scale`: the agent Deployment's replicas set to `count`; when up, wait until they serve.
    ScaleTo(usize),
    /// `terminate`, `remove`, `stop-agent` (grace `None`: the pod's own), `kill` (`Some(0)`):
    /// delete agent pod `agent`.
    DeleteAgent { agent: usize, grace: Option<u32> },
    /// `replace`: delete the oldest serving agent pod gracefully; the Deployment replaces it.
    ReplaceAgent,
    /// `drain-proxy`, `restart-proxy`: delete proxy pod `proxy` gracefully (its preStop hook
    /// runs `sigsci-proxy drain`; the Deployment starts another).
    DeleteProxy(usize),
    /// `slow`, `fault`: `POST /fault?QUERY` on agent `agent`'s admin port (pod proxy).
    Fault { agent: usize, query: String },
    /// `snapshot`: read every agent's PreRequests (the start of the fairness window).
    Snapshot,
    /// `burst`, `bad-clients`, `conn-flood`: extra load against the target, as locally.
    Background,
}

/// One planned step.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) step: Step,
    pub(crate) op: Op,
}

impl AsRef<Step> for Planned {
    fn as_ref(&self) -> &Step {
        &self.step
    }
}

/// The expanded steps of `scenario` (until `end`) as cluster operations, or an error naming
/// every step and setting that cannot run in a cluster.
pub(crate) fn plan(scenario: &Scenario, end: Duration) -> anyhow::Result<Vec<Planned>> {
    let mut problems = Vec::new();
    if scenario.ramp.is_some() {
        problems.push(
            "[ramp]: not supported in a cluster yet (run the rates one by one with --rate)".into(),
        );
    }
    if scenario.autoscale.is_some() {
        problems.push(
            "[autoscale]: local only (it plays the HPA itself; in a cluster the HPA scales)".into(),
        );
    }
    if !scenario.proxy_args.is_empty() {
        problems.push(format!(
            "proxy_args {:?}: a cluster's proxies take their flags from their Deployment (SIGSCI_PROXY_* env)",
            scenario.proxy_args
        ));
    }
    for (i, s) in scenario.steps.iter().enumerate() {
        if let Err(why) = op(s) {
            problems.push(format!("step {i} ({:?} at {:?}): {why}", s.action, s.at));
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("cannot run in a cluster: {}", problems.join("; "));
    }
    Ok(scenario
        .expanded_steps(end)
        .into_iter()
        .map(|step| Planned {
            op: op(&step).expect("checked above"),
            step,
        })
        .collect())
}

fn op(s: &Step) -> Result<Op, &'static str> {
    Ok(match s.action {
        Action::Add => Op::ScaleUp(s.count.unwrap_or(1)),
        Action::Scale => Op::ScaleTo(s.count.ok_or("scale needs count")?),
        Action::Terminate | Action::Remove | Action::StopAgent => Op::DeleteAgent {
            agent: s.agent,
            grace: None,
        },
        Action::Kill => Op::DeleteAgent {
            agent: s.agent,
            grace: Some(0),
        },
        Action::Replace => Op::ReplaceAgent,
        Action::DrainProxy | Action::RestartProxy => Op::DeleteProxy(s.proxy),
        Action::Slow => Op::Fault {
            agent: s.agent,
            query: format!("slow={}", s.factor.ok_or("slow needs factor")?),
        },
        Action::Fault => Op::Fault {
            agent: s.agent,
            query: s.query.clone().ok_or("fault needs query")?,
        },
        Action::Snapshot => Op::Snapshot,
        Action::Burst | Action::BadClients | Action::ConnFlood => Op::Background,
        Action::Pause => {
            return Err(
                "pause stops a process with SIGSTOP; a cluster has no equivalent (use kill or terminate)",
            );
        }
        Action::CutAgent
        | Action::HealAgent
        | Action::CutProxy
        | Action::UnlistProxy
        | Action::HealProxy => {
            return Err(
                "cutting a host off the network needs the netns bed of loadtest local (a cluster's nodes are not ours to cut)",
            );
        }
        Action::Ready => {
            return Err(
                "ready marks an agent ready again in the agents file; a pod's readiness is its own (delete it and let the Deployment replace it)",
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn local_steps_map_to_pod_operations() {
        let s = scenario(
            r#"
            [[step]]
            at = "1s"
            action = "kill"
            agent = 2
            [[step]]
            at = "2s"
            action = "terminate"
            [[step]]
            at = "3s"
            action = "drain-proxy"
            proxy = 1
            [[step]]
            at = "4s"
            action = "add"
            count = 2
            "#,
        );
        let ops: Vec<Op> = plan(&s, Duration::from_secs(10))
            .unwrap()
            .into_iter()
            .map(|p| p.op)
            .collect();
        assert_eq!(
            ops,
            [
                Op::DeleteAgent {
                    agent: 2,
                    grace: Some(0)
                },
                Op::DeleteAgent {
                    agent: 0,
                    grace: None
                },
                Op::DeleteProxy(1),
                Op::ScaleUp(2),
            ]
        );
    }

    #[test]
    fn steps_without_a_cluster_equivalent_are_rejected_by_name() {
        let s = scenario(
            r#"
            [[step]]
            at = "1s"
            action = "pause"
            duration = "1s"
            [[step]]
            at = "2s"
            action = "ready"
            "#,
        );
        let e = plan(&s, Duration::from_secs(10)).unwrap_err().to_string();
        assert!(e.contains("step 0 (Pause at 1s)"), "{e}");
        assert!(e.contains("step 1 (Ready at 2s)"), "{e}");
    }

    #[test]
    fn the_in_cluster_jobs_scenario_plans() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/overlays/loadtest-cluster/scale-and-drain.toml");
        let s = Scenario::load(&path).unwrap();
        let ops: Vec<Op> = plan(&s, s.duration.unwrap())
            .unwrap()
            .into_iter()
            .map(|p| p.op)
            .collect();
        assert!(ops.contains(&Op::ScaleUp(1)), "{ops:?}");
        assert!(ops.contains(&Op::DeleteProxy(0)), "{ops:?}");
    }

    #[test]
    fn shipped_scenarios_run_in_a_cluster_except_those_needing_a_process() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut rejected = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let s = Scenario::load(&path).unwrap();
            if plan(&s, s.duration.unwrap_or(Duration::from_secs(10))).is_err() {
                rejected.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        rejected.sort();
        // [autoscale] (autoscale-*), proxy_args (conn-flood, drain-proxy, rollout-proxy: in a
        // cluster the manifests' drain delay and the real VIP apply), pause (hiccup),
        // [ramp] (ramp), a host cut off the network (agent-host-vanishes, proxy-host-vanishes:
        // the netns bed's).
        assert_eq!(
            rejected,
            [
                "agent-host-vanishes",
                "autoscale-ci",
                "autoscale-ramp",
                "autoscale-step",
                "autoscale-two-proxies",
                "autoscale-wave",
                "conn-flood",
                "drain-proxy",
                "hiccup",
                "proxy-host-vanishes",
                "ramp",
                "rollout-proxy"
            ]
        );
    }
}
