//! `loadtest cluster` against a fake API server (the `fake-apiserver` crate, real wire
//! protocol): the test plays the Deployment controller and the kubelet — it starts simulated
//! agents (in-process, on loopback) for the pods a scale asks for, stops them when their pods
//! are deleted, and drains an in-process sigsci-proxy when its pod is deleted — while the
//! cluster mode drives real load through the real proxy and reads the agents' and proxies'
//! real counters through the fake's pod proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::{Event, FakeApiServer};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use loadtest::cluster::{self, ClusterArgs};
use loadtest::local::RunArgs;
use sigsci_proxy::config::{Dur, ListenAddr, Options};
use sigsci_proxy::{Config, DrainReport, Proxy};
use simulator::agent::SimAgent;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "sigsci";
const ADMIN_PORT: u16 = 9090;
const AGENT_LABEL: &str = "sigsci-agent";
const PROXY_LABEL: &str = "sigsci-proxy";

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), name.to_string())])
}

fn pod(name: &str, app: &str, ip: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            labels: Some(labels(app)),
            ..Default::default()
        },
        status: Some(PodStatus {
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The agents' side of the fake cluster: one simulated agent per pod, and the agents file the
/// proxies watch (standing in for the EndpointSlices a Deployment's pods get).
struct Agents {
    fake: Arc<FakeApiServer>,
    file: PathBuf,
    running: BTreeMap<String, (SimAgent, &'static str)>,
    next: usize,
}

impl Agents {
    async fn start_one(&mut self) {
        let name = format!("agent-{}", self.next);
        self.next += 1;
        let agent = SimAgent::builder()
            .admin("127.0.0.1:0".parse().unwrap())
            .spawn()
            .await
            .unwrap();
        let ip = format!("10.0.0.{}", self.next);
        self.fake.add_pod(pod(&name, AGENT_LABEL, &ip));
        self.fake
            .map_pod_port(NS, &name, ADMIN_PORT, agent.admin_addr().unwrap());
        self.running.insert(name, (agent, "ready"));
        self.write();
    }

    fn write(&self) {
        let list: Vec<serde_json::Value> = self
            .running
            .iter()
            .map(|(name, (a, state))| {
                serde_json::json!({"id": name, "address": a.rpc_addr().to_string(), "state": state})
            })
            .collect();
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&list).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    fn serving(&self) -> usize {
        self.running.values().filter(|(_, s)| *s == "ready").count()
    }

    /// A pod's deletion as the kubelet carries it out: killed at once (grace 0), or
    /// terminating (its endpoint turns `terminating`, pending updates still reach it) for a
    /// moment, then stopped and removed.
    async fn delete(&mut self, name: &str, grace: Option<i64>) {
        if grace == Some(0) {
            if let Some((agent, _)) = self.running.remove(name) {
                self.write();
                agent.shutdown_within(Duration::ZERO).await;
            }
            return;
        }
        if let Some(entry) = self.running.get_mut(name) {
            entry.1 = "terminating";
        }
        self.write();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some((agent, _)) = self.running.remove(name) {
            self.write();
            // The agent's preStop sleep: the proxies have dropped it by now.
            tokio::time::sleep(Duration::from_millis(150)).await;
            agent.shutdown().await;
        }
        self.fake.remove_pod(NS, name);
    }
}

/// An in-process proxy and the pod it stands for.
struct RunningProxy {
    rpc: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<DrainReport>>,
}

async fn start_proxy(fake: &FakeApiServer, name: &str, agents_file: &Path) -> RunningProxy {
    let config = Config::from_options(Options {
        listen: Some(vec!["127.0.0.1:0".parse().unwrap()]),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        agents_file: Some(agents_file.to_owned()),
        agents_file_poll: Some(Dur(Duration::from_millis(50))),
        drain_delay: Some(Dur(Duration::from_millis(50))),
        drain_timeout: Some(Dur(Duration::from_secs(3))),
        // Generous deadlines: behaviour, not speed, on a busy test machine.
        connect_timeout: Some(Dur(Duration::from_secs(1))),
        rpc_timeout: Some(Dur(Duration::from_secs(1))),
        ..Options::default()
    });
    let proxy = Proxy::bind(config).await.unwrap();
    let ListenAddr::Tcp(rpc) = proxy.rpc_addrs()[0].clone() else {
        unreachable!("TCP listener")
    };
    fake.add_pod(pod(name, PROXY_LABEL, "10.0.1.1"));
    fake.map_pod_port(NS, name, ADMIN_PORT, proxy.admin_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy.run(shutdown.clone()));
    RunningProxy {
        rpc,
        shutdown,
        task,
    }
}

/// The fake cluster: an agent Deployment with `replicas` pods and two proxy pods, and the task
/// that plays the controller and the kubelet. Returns the first proxy's RPC address (the
/// Service the load goes to) and what the controller saw, when it ends.
struct FakeCluster {
    fake: Arc<FakeApiServer>,
    target: SocketAddr,
    controller: JoinHandle<Vec<String>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn fake_cluster(replicas: i32) -> FakeCluster {
    let fake = Arc::new(FakeApiServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    fake.add_deployment(Deployment {
        metadata: ObjectMeta {
            name: Some("sigsci-agent".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(AGENT_LABEL)),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut agents = Agents {
        fake: fake.clone(),
        file: dir.path().join("agents.json"),
        running: BTreeMap::new(),
        next: 0,
    };
    for _ in 0..replicas {
        agents.start_one().await;
    }
    let mut proxies = BTreeMap::new();
    for name in ["proxy-0", "proxy-1"] {
        proxies.insert(
            name.to_string(),
            start_proxy(&fake, name, &agents.file).await,
        );
    }
    let target = proxies["proxy-0"].rpc;
    let mut events = fake.events();
    let stop = CancellationToken::new();
    let (f, s) = (fake.clone(), stop.clone());
    let controller = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut want = replicas as usize;
        loop {
            let event = tokio::select! {
                e = events.recv() => e.expect("fake alive"),
                _ = s.cancelled() => break,
            };
            match event {
                Event::Scaled { replicas, .. } => want = replicas as usize,
                Event::PodDeleted {
                    name,
                    grace_period_seconds,
                    ..
                } if name.starts_with("agent-") => {
                    agents.delete(&name, grace_period_seconds).await;
                    seen.push(format!("{name} deleted, grace {grace_period_seconds:?}"));
                }
                Event::PodDeleted { name, .. } => {
                    // A proxy pod: its preStop hook drains it, then it exits.
                    let p = proxies.remove(&name).expect("known proxy pod");
                    p.shutdown.cancel();
                    let report = p.task.await.unwrap().unwrap();
                    f.remove_pod(NS, &name);
                    seen.push(format!("{name} drained, {} cut off", report.cut_off));
                }
            }
            // The ReplicaSet controller: as many serving agents as replicas.
            while agents.serving() < want {
                agents.start_one().await;
                seen.push(format!("agent-{} started", agents.next - 1));
            }
            while agents.serving() > want {
                // The newest goes, gracefully, as the ReplicaSet controller picks.
                let newest = agents.running.keys().next_back().cloned().unwrap();
                agents.delete(&newest, None).await;
                seen.push(format!("{newest} scaled away"));
            }
        }
        for (_, p) in proxies {
            p.shutdown.cancel();
            let _ = p.task.await;
        }
        for (_, (a, _)) in std::mem::take(&mut agents.running) {
            a.shutdown().await;
        }
        seen
    });
    FakeCluster {
        fake,
        target,
        controller,
        stop,
        _dir: dir,
    }
}

fn args(fake: &FakeCluster, scenario: &Path) -> ClusterArgs {
    ClusterArgs {
        run: RunArgs {
            scenario: Some(scenario.to_owned()),
            ..RunArgs::default()
        },
        target: Some(fake.target.into()),
        // Correctness, not speed: a generous deadline so a busy box cannot cause timeouts.
        timeout: Duration::from_secs(2),
        ready_timeout: Duration::from_secs(10),
        ..ClusterArgs::new(NS)
    }
}

fn scenario_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_scales_deletes_and_drains_through_the_api_and_judges_real_counters() {
    let cluster = fake_cluster(2).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        dir.path(),
        r#"
        agents = 3
        rate = 200
        duration = "3s"
        attack_fraction = 0.3
        [expect]
        # A kill may fail the few updates in flight to the killed agent; never one orphaned.
        max_errors = 20
        max_orphaned = 0
        [[step]]
        at = "500ms"
        action = "add"
        [[step]]
        at = "1s"
        action = "kill"
        agent = 0
        [[step]]
        at = "1500ms"
        action = "terminate"
        agent = 1
        [[step]]
        at = "2s"
        action = "drain-proxy"
        proxy = 1
        [[step]]
        at = "2500ms"
        action = "scale"
        count = 3
        "#,
    );
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        cluster::run(args(&cluster, &scenario), cluster.fake.client()),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();
    let text = format!(
        "{}\nsteps: {:#?}\nfailures: {:?}",
        report.drive.to_text(),
        report.steps,
        report.failures
    );
    cluster.stop.cancel();
    let seen = cluster.controller.await.unwrap();
    println!("{text}\ncontroller: {seen:#?}");

    // The scale subresource was patched: to the scenario's 3, +1 by `add`, 3 by `scale`, then
    // back to the 2 it was.
    let requests = cluster.fake.requests();
    let scales: Vec<i64> = requests
        .iter()
        .filter(|r| r.verb == "patch" && r.resource == "deployments/scale")
        .map(|r| {
            r.body.as_ref().unwrap()["spec"]["replicas"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(scales, [3, 4, 3, 2], "{text}");
    assert_eq!(cluster.fake.replicas(NS, "sigsci-agent"), Some(2));
    assert_eq!(
        (
            report.replicas.found,
            report.replicas.driven,
            report.replicas.end
        ),
        (2, 3, 2)
    );

    // Pods were deleted the way each step means: kill = grace 0, terminate and drain graceful.
    let deletes: Vec<(String, Option<i64>)> = requests
        .iter()
        .filter(|r| r.verb == "delete" && r.resource == "pods")
        .map(|r| {
            let grace = r
                .body
                .as_ref()
                .and_then(|b| b["gracePeriodSeconds"].as_i64());
            (r.name.clone(), grace)
        })
        .collect();
    assert_eq!(
        deletes,
        [
            ("agent-0".to_string(), Some(0)),
            ("agent-1".to_string(), None),
            ("proxy-1".to_string(), None),
        ],
        "{text}"
    );
    assert!(
        seen.iter().any(|s| s.starts_with("proxy-1 drained")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"agent-5 scaled away".to_string()),
        "{seen:?}"
    );

    // Counters came through the pod proxy, from agents and proxies.
    let proxied: Vec<&str> = requests
        .iter()
        .filter(|r| r.verb == "proxy")
        .map(|r| r.name.as_str())
        .collect();
    for expected in [
        "agent-0:9090/stats",
        "agent-3:9090/stats",
        "proxy-0:9090/metrics",
    ] {
        assert!(
            proxied.contains(&expected),
            "{expected} not read: {proxied:?}"
        );
    }

    // The report is computed from them: every agent pod seen (2 + 1 by the scale to 3, + 1 by
    // add, + 2 replacements) has counters — the one the scale to 3 took away included — and
    // they add up to what the drive saw.
    assert_eq!(
        report.agent_pods.len(),
        6,
        "{:?}\n{text}",
        report.agent_pods
    );
    assert!(
        report.drive.agents.iter().all(|a| a.stats.is_some()),
        "{text}"
    );
    let pre = &report.drive.tally.methods["RPC.PreRequest"];
    let received: u64 = report
        .drive
        .agents
        .iter()
        .map(|a| a.stats.as_ref().unwrap().prerequests)
        .sum();
    assert!(pre.ok > 300, "{text}");
    // Every answered PreRequest reached an agent and was counted: retries after the kill can
    // add a few, and the killed agent's counters are its last read before the kill, which may
    // miss the few it answered in between.
    assert!(
        received + 5 >= pre.ok && received <= pre.calls + 20,
        "agents saw {received} PreRequests, the drive {} answered of {}\n{text}",
        pre.ok,
        pre.calls
    );
    assert!(report.drive.updates_matched > 0, "{text}");
    assert_eq!(report.drive.updates_orphaned, 0, "{text}");
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.starts_with("proxy pod proxy-0:") && !s.contains(": 0 RPCs")),
        "{text}"
    );
    assert!(report.failures.is_empty(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_no_cluster_equivalent_is_rejected_before_anything_changes() {
    let cluster = fake_cluster(1).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario_file(
        dir.path(),
        r#"
        agents = 3
        [[step]]
        at = "1s"
        action = "pause"
        agent = 0
        duration = "1s"
        "#,
    );
    let err = cluster::run(args(&cluster, &scenario), cluster.fake.client())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("step 0 (Pause at 1s)"), "{err}");
    assert!(err.contains("SIGSTOP"), "{err}");
    assert!(
        cluster.fake.requests().is_empty(),
        "{:?}",
        cluster.fake.requests()
    );
    cluster.stop.cancel();
    cluster.controller.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_expectations_fail_the_run_from_counters_read_through_the_api() {
    let cluster = fake_cluster(2).await;
    let dir = tempfile::tempdir().unwrap();
    // Two agents share the load about evenly: neither can stay under 20%.
    let scenario = scenario_file(
        dir.path(),
        r#"
        rate = 200
        duration = "1s"
        [expect]
        max_share = 0.2
        "#,
    );
    let report = cluster::run(args(&cluster, &scenario), cluster.fake.client())
        .await
        .unwrap();
    cluster.stop.cancel();
    cluster.controller.await.unwrap();
    // No scale asked for: the Deployment was never patched.
    assert_eq!(cluster.fake.count("patch"), 0);
    assert_eq!(report.agent_pods, ["agent-0", "agent-1"]);
    let share_failures = report
        .failures
        .iter()
        .filter(|f| f.contains("of PreRequests (expected 0..20%)"))
        .count();
    assert_eq!(share_failures, 2, "{:?}", report.failures);
}
