//! The Kubernetes HorizontalPodAutoscaler controller's algorithm, step for step, so that a
//! scenario scales the simulated agents exactly as a cluster would scale the agent Deployment.
//!
//! Source: the controller in kubernetes/kubernetes, `pkg/controller/podautoscaler/`, and its
//! documentation ("Horizontal Pod Autoscaling", section "Algorithm details", and the
//! `behavior` field of `autoscaling/v2`). One sync (`reconcileAutoscaler` in `horizontal.go`):
//!
//! 1. `currentReplicas` is the scale subresource's `spec.replicas`. Above `maxReplicas` the
//!    desired count is `maxReplicas`, below `minReplicas` it is `minReplicas`, and nothing else
//!    is computed.
//! 2. Each metric proposes a count (`computeReplicasForMetrics`); the largest wins, metrics that
//!    cannot be read propose nothing.
//!    - External, `AverageValue` (`GetExternalPerPodMetricReplicas` in
//!      `replica_calculator.go`): `usage` is the metric's value (the sum of every series the
//!      adapter returns), `ratio = usage ÷ (target × status.replicas)`; if `|1 − ratio|` is
//!      above the tolerance (0.1, `--horizontal-pod-autoscaler-tolerance`), the proposal is
//!      `ceil(usage ÷ target)`, else `status.replicas` (the pods that exist, ready or not).
//!    - Resource, `Utilization` (`GetResourceReplicas`): the mean utilization of the pods with
//!      a sample ÷ the target; pods not ready yet are ignored; within the tolerance the
//!      proposal is `currentReplicas`, else `ceil(ratio × pods with a sample)`. When the ratio
//!      says scale up and some pods were ignored, they count as 0 % and the ratio is computed
//!      again; if that one is within the tolerance or points the other way, nothing changes.
//! 3. `stabilizeRecommendationWithBehaviors`: every sync's proposal is kept with its time. The
//!    result is `currentReplicas` brought within [lowest proposal of the scale-up window,
//!    highest proposal of the scale-down window] (each window includes this sync's proposal).
//! 4. `convertDesiredReplicasWithBehaviorRate`: scaling up is limited to what the scale-up
//!    policies allow (`calculateScaleUpLimitWithScalingRules`: per policy, from the replicas at
//!    the start of its period — current minus what was added plus what was removed within the
//!    period — `Pods` adds `value`, `Percent` multiplies by `1 + value/100` rounded up; `Max`
//!    picks the largest limit, `Min` the smallest, `Disabled` none) and by `maxReplicas`;
//!    scaling down likewise (`Percent` rounds down) and by `minReplicas`.
//! 5. A change is applied and recorded as a scale event with its time, for the policies.
//!
//! Time is passed in (a [`Duration`] since the start), never read from a clock: the unit tests
//! replay the worked examples exactly, and a scenario can scale every window alike.

use std::time::Duration;

/// The controller's default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// The part of a `HorizontalPodAutoscaler` spec the algorithm reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// `minReplicas`.
    pub min_replicas: u32,
    /// `maxReplicas`.
    pub max_replicas: u32,
    /// `metrics`, in order.
    pub metrics: Vec<Metric>,
    /// `behavior.scaleUp`, defaults applied.
    pub scale_up: Rules,
    /// `behavior.scaleDown`, defaults applied.
    pub scale_down: Rules,
}

/// One entry of `metrics`.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// `type: External` with `target.type: AverageValue`.
    ExternalAverageValue {
        /// `metric.name`.
        name: String,
        /// `target.averageValue`.
        target: f64,
    },
    /// `type: Resource`, `name: cpu`, `target.type: Utilization`.
    CpuUtilization {
        /// `target.averageUtilization` as a fraction (70 % = 0.7).
        target: f64,
    },
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub stabilization: Duration,
    /// `selectPolicy`.
    pub select: Select,
    /// `policies`.
    pub policies: Vec<Policy>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy that allows the largest change (the default).
    Max,
    /// The policy that allows the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One of `policies`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// `type`.
    pub kind: PolicyKind,
    /// `value`.
    pub value: u32,
    /// `periodSeconds`.
    pub period: Duration,
}

/// A policy's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `Pods`: this many pods per period.
    Pods,
    /// `Percent`: this percentage of the replicas at the period's start.
    Percent,
}

impl Rules {
    /// The API's defaults for `behavior.scaleUp`: no window; 4 pods or 100 % every 15 s, the
    /// larger.
    pub fn default_scale_up() -> Rules {
        Rules {
            stabilization: Duration::ZERO,
            select: Select::Max,
            policies: vec![
                Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period: Duration::from_secs(15),
                },
                Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: Duration::from_secs(15),
                },
            ],
        }
    }

    /// The defaults for `behavior.scaleDown`: a 300 s window; 100 % every 15 s.
    pub fn default_scale_down() -> Rules {
        Rules {
            stabilization: Duration::from_secs(300),
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: Duration::from_secs(15),
            }],
        }
    }

    fn scaled(&self, f: f64) -> Rules {
        Rules {
            stabilization: self.stabilization.mul_f64(f),
            select: self.select,
            policies: self
                .policies
                .iter()
                .map(|p| Policy {
                    period: p.period.mul_f64(f),
                    ..*p
                })
                .collect(),
        }
    }
}

impl Spec {
    /// The same spec with every window and period multiplied by `f` (a test scaled in time).
    pub fn time_scaled(&self, f: f64) -> Spec {
        Spec {
            scale_up: self.scale_up.scaled(f),
            scale_down: self.scale_down.scaled(f),
            ..self.clone()
        }
    }

    /// The same spec with only the metrics `keep` accepts.
    pub fn with_metrics(&self, keep: impl Fn(&Metric) -> bool) -> Spec {
        Spec {
            metrics: self.metrics.iter().filter(|m| keep(m)).cloned().collect(),
            ..self.clone()
        }
    }
}

/// What the controller reads at one sync.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The scale subresource's `spec.replicas`.
    pub spec_replicas: u32,
    /// Its `status.replicas`: pods that exist and are not terminating, ready or not.
    pub status_replicas: u32,
    /// External metrics' values by name (as the adapter returns them); a missing one cannot be
    /// read.
    pub external: Vec<(String, f64)>,
    /// Every pod that is not terminating.
    pub pods: Vec<Pod>,
}

/// One pod as the resource-metrics path sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pod {
    /// Ready condition true.
    pub ready: bool,
    /// CPU used ÷ CPU requested over the metrics window, if metrics-server has a sample.
    pub cpu: Option<f64>,
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The replicas to set (equal to the current ones: no change).
    pub desired: u32,
    /// Each metric's proposal, in spec order (`None`: could not be computed).
    pub proposals: Vec<Option<u32>>,
    /// The largest proposal, before stabilization and policies.
    pub metric_desired: Option<u32>,
}

/// The controller's memory for one HPA: proposals and scale events with their times.
#[derive(Debug, Clone)]
pub struct Hpa {
    spec: Spec,
    tolerance: f64,
    recommendations: Vec<(Duration, u32)>,
    scale_up_events: Vec<(Duration, u32)>,
    scale_down_events: Vec<(Duration, u32)>,
}

impl Hpa {
    /// An HPA with the default tolerance and no history.
    pub fn new(spec: Spec) -> Hpa {
        Hpa {
            spec,
            tolerance: TOLERANCE,
            recommendations: Vec::new(),
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
        }
    }

    /// The spec it acts on.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// One sync at `now`: what to set the replicas to.
    pub fn sync(&mut self, now: Duration, obs: &Observation) -> Decision {
        let current = obs.spec_replicas;
        let s = &self.spec;
        let proposals: Vec<Option<u32>> = s
            .metrics
            .iter()
            .map(|m| proposal(m, obs, self.tolerance))
            .collect();
        let metric_desired = proposals.iter().flatten().copied().max();
        let desired = if current == 0 && s.min_replicas != 0 {
            // Scaling is disabled for a target scaled to zero by hand.
            0
        } else if current > s.max_replicas {
            s.max_replicas
        } else if current < s.min_replicas {
            s.min_replicas
        } else {
            match metric_desired {
                None => current,
                Some(d) => {
                    let stabilized = self.stabilize(now, current, d);
                    self.limit_rate(now, current, stabilized)
                }
            }
        };
        if desired != current {
            self.store_scale_event(now, current, desired);
        }
        Decision {
            desired,
            proposals,
            metric_desired,
        }
    }

    /// `stabilizeRecommendationWithBehaviors`.
    fn stabilize(&mut self, now: Duration, current: u32, desired: u32) -> u32 {
        let up_window = self.spec.scale_up.stabilization;
        let down_window = self.spec.scale_down.stabilization;
        let after = |ts: Duration, window: Duration| now.checked_sub(window).is_none_or(|c| ts > c);
        let mut up = desired;
        let mut down = desired;
        let mut old = None;
        for (i, &(ts, r)) in self.recommendations.iter().enumerate() {
            if after(ts, up_window) {
                up = up.min(r);
            }
            if after(ts, down_window) {
                down = down.max(r);
            }
            if !after(ts, up_window) && !after(ts, down_window) {
                old = Some(i);
            }
        }
        let mut recommendation = current;
        if recommendation < up {
            recommendation = up;
        }
        if recommendation > down {
            recommendation = down;
        }
        match old {
            Some(i) => self.recommendations[i] = (now, desired),
            None => self.recommendations.push((now, desired)),
        }
        recommendation
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn limit_rate(&self, now: Duration, current: u32, desired: u32) -> u32 {
        let s = &self.spec;
        let cur = i64::from(current);
        if desired > current {
            let limit = self.limit(now, cur, &s.scale_up, true).max(cur);
            let most = i64::from(s.max_replicas).min(limit);
            (i64::from(desired).min(most)).max(0) as u32
        } else if desired < current {
            let limit = self.limit(now, cur, &s.scale_down, false).min(cur);
            let least = i64::from(s.min_replicas).max(limit);
            (i64::from(desired).max(least)).max(0) as u32
        } else {
            desired
        }
    }

    /// `calculateScaleUpLimitWithScalingRules` (`up`) or `calculateScaleDownLimitWithBehaviors`.
    fn limit(&self, now: Duration, current: i64, rules: &Rules, up: bool) -> i64 {
        let in_period = |events: &[(Duration, u32)], period: Duration| -> i64 {
            events
                .iter()
                .filter(|(ts, _)| now.checked_sub(period).is_none_or(|c| *ts > c))
                .map(|(_, n)| i64::from(*n))
                .sum()
        };
        // Max (default) picks the policy allowing the largest change; Min the smallest.
        let largest_change = match rules.select {
            Select::Disabled => return current,
            Select::Max => true,
            Select::Min => false,
        };
        let mut result: Option<i64> = None;
        for p in &rules.policies {
            let added = in_period(&self.scale_up_events, p.period);
            let removed = in_period(&self.scale_down_events, p.period);
            let start = current - added + removed;
            let v = i64::from(p.value);
            let proposed = match (p.kind, up) {
                (PolicyKind::Pods, true) => start + v,
                (PolicyKind::Percent, true) => {
                    (start as f64 * (1.0 + v as f64 / 100.0)).ceil() as i64
                }
                (PolicyKind::Pods, false) => start - v,
                (PolicyKind::Percent, false) => (start as f64 * (1.0 - v as f64 / 100.0)) as i64,
            };
            let pick_max = largest_change == up;
            result = Some(match result {
                None => proposed,
                Some(r) if pick_max => r.max(proposed),
                Some(r) => r.min(proposed),
            });
        }
        result.unwrap_or(current)
    }

    /// `storeScaleEvent`: events older than the longest policy period are dropped (the
    /// controller reuses their slots; they fall in no period either way).
    fn store_scale_event(&mut self, now: Duration, prev: u32, new: u32) {
        let (events, rules, change) = if new > prev {
            (&mut self.scale_up_events, &self.spec.scale_up, new - prev)
        } else {
            (
                &mut self.scale_down_events,
                &self.spec.scale_down,
                prev - new,
            )
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period)
            .max()
            .unwrap_or_default();
        events.retain(|(ts, _)| now.checked_sub(longest).is_none_or(|c| *ts >= c));
        events.push((now, change));
    }
}

/// One metric's proposal, or `None` when it cannot be computed.
fn proposal(m: &Metric, obs: &Observation, tolerance: f64) -> Option<u32> {
    match m {
        Metric::ExternalAverageValue { name, target } => {
            let usage = obs.external.iter().find(|(n, _)| n == name)?.1;
            Some(external_average_value(
                usage,
                *target,
                obs.status_replicas,
                tolerance,
            ))
        }
        Metric::CpuUtilization { target } => {
            resource_utilization(&obs.pods, *target, obs.spec_replicas, tolerance)
        }
    }
}

/// `GetExternalPerPodMetricReplicas`: the proposal of an External `AverageValue` metric.
/// Quantities are milli-units in the controller; so are they here.
pub fn external_average_value(
    usage: f64,
    target: f64,
    status_replicas: u32,
    tolerance: f64,
) -> u32 {
    let usage = (usage * 1000.0).round();
    let target = (target * 1000.0).round().max(1.0);
    let ratio = usage / (target * f64::from(status_replicas));
    if (1.0 - ratio).abs() > tolerance {
        (usage / target).ceil() as u32
    } else {
        status_replicas
    }
}

/// `GetResourceReplicas` for CPU utilization, every pod requesting the same CPU: pods not
/// ready are ignored, pods without a sample are missing.
pub fn resource_utilization(
    pods: &[Pod],
    target: f64,
    current: u32,
    tolerance: f64,
) -> Option<u32> {
    let mut samples: Vec<f64> = pods
        .iter()
        .filter(|p| p.ready)
        .filter_map(|p| p.cpu)
        .collect();
    let ready_count = samples.len();
    let ignored = pods.iter().filter(|p| !p.ready).count();
    let missing = pods.iter().filter(|p| p.ready && p.cpu.is_none()).count();
    if samples.is_empty() {
        return None;
    }
    let ratio_of = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64 / target;
    let ratio = ratio_of(&samples);
    let rebalance_ignored = ignored > 0 && ratio > 1.0;
    if !rebalance_ignored && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            return Some(current);
        }
        return Some((ratio * ready_count as f64).ceil() as u32);
    }
    if missing > 0 {
        // Missing pods count as 100 % of their request on a scale-down, 0 % on a scale-up.
        let v = if ratio < 1.0 { 1.0 } else { 0.0 };
        if ratio != 1.0 {
            samples.extend(std::iter::repeat_n(v, missing));
        }
    }
    if rebalance_ignored {
        samples.extend(std::iter::repeat_n(0.0, ignored));
    }
    let new_ratio = ratio_of(&samples);
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Some(current);
    }
    let new = (new_ratio * samples.len() as f64).ceil() as u32;
    if (new_ratio < 1.0 && new > current) || (new_ratio > 1.0 && new < current) {
        return Some(current);
    }
    Some(new)
}

#[cfg(test)]
mod tests;
