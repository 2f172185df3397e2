//! The agents a run starts, each with its own CPU: shape, workers and service time, from the
//! flags or the scenario's per-agent lists (agents of unequal capacity); and the pool's capacity
//! they add up to, the yardstick of the overload report.

use crate::agent::Shape;
use crate::scenario::{Action, Scenario, Step};
use crate::units::ServiceTime;

use super::options::LocalArgs;

/// One agent's CPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AgentSpec {
    pub(crate) shape: Shape,
    pub(crate) workers: usize,
    pub(crate) service_time: ServiceTime,
}

impl AgentSpec {
    /// Calls per second it serves flat out: workers / mean service time.
    pub(crate) fn capacity(&self) -> f64 {
        let mean = self.service_time.mean().as_secs_f64();
        if mean > 0.0 {
            self.workers as f64 / mean
        } else {
            f64::INFINITY
        }
    }
}

/// Agent `i`'s CPU: the scenario's per-agent lists (entry `i` modulo their length) where given,
/// else `--workers`, `--service-time`; the shape from `--agent-shape`, else the scenario's.
pub(crate) fn agent_spec(args: &LocalArgs, s: &Scenario, i: usize) -> anyhow::Result<AgentSpec> {
    let shape = match (args.agent_shape, &s.agent_shape) {
        (Some(shape), _) => shape,
        (None, Some(text)) => text.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, None) => Shape::Fifo,
    };
    let workers = cycle(&s.agent_workers, i).copied().unwrap_or(args.workers);
    let service_time = match cycle(&s.agent_service_time, i) {
        Some(t) => t
            .parse()
            .map_err(|e| anyhow::anyhow!("agent_service_time: {e}"))?,
        None => args.service_time,
    };
    Ok(AgentSpec {
        shape,
        workers,
        service_time,
    })
}

fn cycle<T>(list: &[T], i: usize) -> Option<&T> {
    (!list.is_empty()).then(|| &list[i % list.len()])
}

/// The `loadtest agent` arguments of agent `spec`, then `--agent-arg`s.
pub(crate) fn process_args(args: &LocalArgs, spec: &AgentSpec) -> Vec<String> {
    let mut a = vec![
        "--service-time".to_string(),
        spec.service_time.to_string().replace("µs", "us"),
        "--workers".into(),
        spec.workers.to_string(),
        "--shape".into(),
        spec.shape.to_string(),
        "--flag-fraction".into(),
        args.flag_fraction.to_string(),
    ];
    a.extend(args.agent_args.iter().cloned());
    a
}

/// Each agent's capacity at `at` into the drive: its own, divided by the factor of the last
/// `slow` step on it before `at`.
pub(crate) fn capacities_at(
    specs: &[AgentSpec],
    plan: &[Step],
    at: std::time::Duration,
) -> Vec<f64> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let slow = plan
                .iter()
                .filter(|s| s.action == Action::Slow && s.agent == i && s.at <= at)
                .filter_map(|s| s.factor)
                .next_back()
                .unwrap_or(1.0);
            spec.capacity() / slow
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slow_step_divides_the_capacity_from_its_time_on() {
        let spec = |workers, ms| AgentSpec {
            shape: Shape::Ps,
            workers,
            service_time: ServiceTime::Fixed(Duration::from_millis(ms)),
        };
        let specs = [spec(1, 10), spec(2, 10)];
        let slow: Step = toml::from_str("at = \"5s\"\naction = \"slow\"\nagent = 1\nfactor = 2.0")
            .expect("a step");
        let plan = [slow];
        assert_eq!(capacities_at(&specs, &plan, Duration::ZERO), [100.0, 200.0]);
        assert_eq!(
            capacities_at(&specs, &plan, Duration::from_secs(6)),
            [100.0, 100.0]
        );
    }
}
