//! What `loadtest cluster` asks of the API server, through the `kube` crate: the agent
//! Deployment's `scale` subresource (get, merge-patch), pods by label selector (list, delete),
//! and the pod proxy (`pods/{name}:{port}/proxy/{path}`) to read the agents' and proxies' admin
//! endpoints without a port-forward. RBAC: `deployments/scale` get+patch, `pods` list+delete,
//! `pods/proxy` get (+create for `slow`/`fault` steps, which POST).

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

/// One pod as the run sees it.
#[derive(Debug, Clone)]
pub(crate) struct PodInfo {
    pub(crate) name: String,
    /// `status.podIP`, if assigned.
    pub(crate) ip: Option<std::net::IpAddr>,
    /// Condition `Ready` is `True`.
    pub(crate) ready: bool,
    /// Has a `deletionTimestamp` (terminating).
    pub(crate) deleting: bool,
}

impl PodInfo {
    fn of(pod: &Pod) -> PodInfo {
        let status = pod.status.as_ref();
        PodInfo {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            deleting: pod.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Serving: ready and not terminating.
    pub(crate) fn serving(&self) -> bool {
        self.ready && !self.deleting
    }
}

/// The namespace, the agent Deployment, and how to find the agent and proxy pods.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: kube::Client,
    pub(crate) namespace: String,
    pub(crate) agent_deployment: String,
    pub(crate) agent_selector: String,
    pub(crate) proxy_selector: String,
}

impl Cluster {
    pub(crate) fn new(
        client: kube::Client,
        namespace: &str,
        agent_deployment: &str,
        agent_selector: &str,
        proxy_selector: &str,
    ) -> Cluster {
        Cluster {
            client,
            namespace: namespace.to_owned(),
            agent_deployment: agent_deployment.to_owned(),
            agent_selector: agent_selector.to_owned(),
            proxy_selector: proxy_selector.to_owned(),
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The agent Deployment's `spec.replicas`, from its scale subresource.
    pub(crate) async fn agent_replicas(&self) -> anyhow::Result<i32> {
        let scale = self
            .deployments()
            .get_scale(&self.agent_deployment)
            .await
            .with_context(|| {
                format!(
                    "reading deployments/{}/scale in {}",
                    self.agent_deployment, self.namespace
                )
            })?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Sets the agent Deployment's replicas with a merge patch of its scale subresource (what
    /// `kubectl scale` does).
    pub(crate) async fn scale_agents(&self, replicas: i32) -> anyhow::Result<()> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.deployments()
            .patch_scale(
                &self.agent_deployment,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| {
                format!(
                    "scaling deployments/{} to {replicas}",
                    self.agent_deployment
                )
            })?;
        Ok(())
    }

    /// Pods matching `selector`, by name.
    pub(crate) async fn list(&self, selector: &str) -> anyhow::Result<Vec<PodInfo>> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing pods -l {selector} in {}", self.namespace))?;
        let mut pods: Vec<PodInfo> = list.items.iter().map(PodInfo::of).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Deletes a pod; `grace` `Some(0)` is a kill (no preStop, no drain), `None` the pod's own
    /// `terminationGracePeriodSeconds` (its preStop hook runs).
    pub(crate) async fn delete(&self, pod: &str, grace: Option<u32>) -> anyhow::Result<()> {
        let params = match grace {
            Some(g) => DeleteParams::default().grace_period(g),
            None => DeleteParams::default(),
        };
        self.pods()
            .delete(pod, &params)
            .await
            .with_context(|| format!("deleting pod {pod}"))?;
        Ok(())
    }

    /// `GET` (or `POST`) `path` on `pod:port` through the API server's pod proxy.
    pub(crate) async fn pod_http(
        &self,
        method: http::Method,
        pod: &str,
        port: u16,
        path: &str,
    ) -> anyhow::Result<String> {
        let uri = format!(
            "/api/v1/namespaces/{}/pods/{pod}:{port}/proxy{path}",
            self.namespace
        );
        let req = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Vec::new())?;
        let call = self.client.request_text(req);
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .with_context(|| format!("{method} {pod}:{port}{path}: no answer within 5 s"))?
            .with_context(|| format!("{method} {pod}:{port}{path} through the pod proxy"))
    }

    /// Waits until `selector` has at least `n` serving pods; returns how long it took.
    pub(crate) async fn wait_serving(
        &self,
        selector: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let t0 = tokio::time::Instant::now();
        loop {
            let serving = self
                .list(selector)
                .await?
                .iter()
                .filter(|p| p.serving())
                .count();
            if serving >= n {
                return Ok(t0.elapsed());
            }
            anyhow::ensure!(
                t0.elapsed() < timeout,
                "{serving} of {n} pods -l {selector} ready after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
