//! Reads the shipped `HorizontalPodAutoscaler` (`manifests/components/hpa/hpa.yaml`) into the
//! emulation's [`Spec`], so that the scenarios and the manifest cannot drift apart: change the
//! manifest's policies and the next run plays the new ones.
//!
//! The YAML is parsed with `yaml-rust2`, turned into JSON and read as `k8s-openapi`'s
//! `autoscaling/v2` type, so field names and types are the API's own; the API's defaults fill
//! what the manifest leaves out (`Rules::default_scale_up`, `Rules::default_scale_down`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscaler};
use yaml_rust2::{Yaml, YamlLoader};

use super::hpa::{Metric, Policy, PolicyKind, Rules, Select, Spec};

/// The manifest, from the workspace root.
pub const DEFAULT_PATH: &str = "manifests/components/hpa/hpa.yaml";

/// Reads the first `HorizontalPodAutoscaler` in the YAML file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Spec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

/// Whether the prometheus-adapter rule documented in the manifest's comments rounds the summed
/// demand up before the HPA sees it (`metricsQuery: 'ceil(sum(...))'`), as the emulation must
/// then do; `false` when the rule passes the sum as it is.
pub fn adapter_rounds_up(path: &Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rule = text
        .lines()
        .find(|l| l.contains("metricsQuery:"))
        .with_context(|| {
            format!(
                "{}: no adapter rule (metricsQuery) in the comments",
                path.display()
            )
        })?;
    Ok(rule.contains("ceil("))
}

/// Reads the first `HorizontalPodAutoscaler` in `text`.
pub fn parse(text: &str) -> anyhow::Result<Spec> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow::anyhow!("YAML: {e}"))?;
    let doc = docs
        .iter()
        .map(to_json)
        .find(|d| d["kind"] == "HorizontalPodAutoscaler")
        .context("no HorizontalPodAutoscaler")?;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(doc)?;
    let spec = hpa.spec.context("no spec")?;
    let mut metrics = Vec::new();
    for m in spec.metrics.unwrap_or_default() {
        match m.type_.as_str() {
            "External" => {
                let e = m.external.context("External metric without external")?;
                anyhow::ensure!(
                    e.target.type_ == "AverageValue",
                    "external metric {}: only AverageValue targets are emulated",
                    e.metric.name
                );
                let v = e
                    .target
                    .average_value
                    .context("AverageValue without averageValue")?;
                metrics.push(Metric::ExternalAverageValue {
                    name: e.metric.name,
                    target: quantity(&v.0)?,
                });
            }
            "Resource" => {
                let r = m.resource.context("Resource metric without resource")?;
                anyhow::ensure!(
                    r.name == "cpu" && r.target.type_ == "Utilization",
                    "resource metric {}: only cpu Utilization is emulated",
                    r.name
                );
                let u = r
                    .target
                    .average_utilization
                    .context("Utilization without averageUtilization")?;
                metrics.push(Metric::CpuUtilization {
                    target: f64::from(u) / 100.0,
                });
            }
            other => anyhow::bail!("metric type {other} is not emulated"),
        }
    }
    let behavior = spec.behavior.unwrap_or_default();
    Ok(Spec {
        min_replicas: u32::try_from(spec.min_replicas.unwrap_or(1))?,
        max_replicas: u32::try_from(spec.max_replicas)?,
        metrics,
        scale_up: rules(behavior.scale_up, Rules::default_scale_up())?,
        scale_down: rules(behavior.scale_down, Rules::default_scale_down())?,
    })
}

/// One direction's rules, the API's defaults for what is left out.
fn rules(r: Option<HPAScalingRules>, default: Rules) -> anyhow::Result<Rules> {
    let Some(r) = r else { return Ok(default) };
    let select = match r.select_policy.as_deref() {
        None | Some("Max") => Select::Max,
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        Some(other) => anyhow::bail!("selectPolicy {other}"),
    };
    let policies = match r.policies {
        None => default.policies,
        Some(ps) => ps
            .into_iter()
            .map(|p| {
                let kind = match p.type_.as_str() {
                    "Pods" => PolicyKind::Pods,
                    "Percent" => PolicyKind::Percent,
                    other => anyhow::bail!("policy type {other}"),
                };
                Ok(Policy {
                    kind,
                    value: u32::try_from(p.value)?,
                    period: Duration::from_secs(u64::try_from(p.period_seconds)?),
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    Ok(Rules {
        stabilization: match r.stabilization_window_seconds {
            Some(s) => Duration::from_secs(u64::try_from(s)?),
            None => default.stabilization,
        },
        select,
        policies,
    })
}

/// A Kubernetes quantity as a number: `1`, `1.5`, `500m`, `2k`.
fn quantity(q: &str) -> anyhow::Result<f64> {
    let q = q.trim();
    let (num, mult) = match q.char_indices().last() {
        Some((i, 'm')) => (&q[..i], 1e-3),
        Some((i, 'k')) => (&q[..i], 1e3),
        Some((i, 'M')) => (&q[..i], 1e6),
        _ => (q, 1.0),
    };
    let v: f64 = num
        .parse()
        .with_context(|| format!("quantity {q:?} is not emulated"))?;
    Ok(v * mult)
}

/// YAML to JSON (mappings with string keys, sequences, scalars).
fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .filter_map(|(k, v)| k.as_str().map(|k| (k.to_owned(), to_json(v))))
                .collect(),
        ),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Boolean(b) => Value::Bool(*b),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_manifest_reads_as_its_yaml_says() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_PATH);
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = load(&path).unwrap();
        // The numbers the test reads from the file are the ones the emulation plays.
        assert!(text.contains(&format!("minReplicas: {}", spec.min_replicas)));
        assert!(text.contains(&format!("maxReplicas: {}", spec.max_replicas)));
        assert!(spec.min_replicas >= 1 && spec.max_replicas >= spec.min_replicas);
        assert!(matches!(
            &spec.metrics[0],
            Metric::ExternalAverageValue { name, .. } if name == "sigsci_proxy_agent_demand"
        ));
        assert!(
            spec.metrics
                .iter()
                .any(|m| matches!(m, Metric::CpuUtilization { .. }))
        );
        assert!(!spec.scale_up.policies.is_empty() && !spec.scale_down.policies.is_empty());
        assert!(text.contains(&format!(
            "stabilizationWindowSeconds: {}",
            spec.scale_down.stabilization.as_secs()
        )));
    }

    #[test]
    fn left_out_behavior_takes_the_api_defaults() {
        let spec = parse(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\n\
             spec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  maxReplicas: 5\n\
             \x20 metrics:\n  - type: External\n    external:\n      metric: {name: d}\n      target: {type: AverageValue, averageValue: 500m}\n\
             \x20 behavior:\n    scaleDown:\n      selectPolicy: Min\n",
        )
        .unwrap();
        assert_eq!(spec.min_replicas, 1);
        assert_eq!(spec.max_replicas, 5);
        assert_eq!(
            spec.metrics,
            vec![Metric::ExternalAverageValue {
                name: "d".into(),
                target: 0.5
            }]
        );
        assert_eq!(spec.scale_up, Rules::default_scale_up());
        assert_eq!(spec.scale_down.select, Select::Min);
        assert_eq!(spec.scale_down.stabilization, Duration::from_secs(300));
    }

    #[test]
    fn metrics_the_emulation_cannot_play_are_refused() {
        let y = "kind: HorizontalPodAutoscaler\napiVersion: autoscaling/v2\nmetadata: {name: x}\n\
                 spec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  maxReplicas: 5\n\
                 \x20 metrics:\n  - type: Resource\n    resource:\n      name: memory\n      target: {type: Utilization, averageUtilization: 50}\n";
        assert!(parse(y).is_err());
    }
}
