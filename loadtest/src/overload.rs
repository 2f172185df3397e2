//! The overload report of a run: what the agent pool could serve (its capacity, from each
//! agent's workers and service time), what was offered, what was inspected (answered) and how
//! fast the rest failed open; second by second, per agent and per flow; and the fronts' CPU per
//! call offered, shed ones included. Judged against a scenario's overload expectations.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::drive::{BUCKET, DriveReport};
use crate::scenario::{Expect, Flow};

/// The overload figures of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OverloadReport {
    /// The pool's capacity at the start, RPC/s: the sum of the agents' workers ÷ mean service
    /// time.
    pub capacity_rpc_s: f64,
    /// Calls offered (every method, failed ones included) per second of the drive.
    pub offered_rpc_s: f64,
    /// Calls inspected (answered without error) per second of the drive.
    pub inspected_rpc_s: f64,
    /// `inspected_rpc_s` ÷ `capacity_rpc_s`.
    pub capacity_fraction: f64,
    /// p99 latency of the calls not inspected, ms.
    pub uninspected_p99_ms: Option<f64>,
    /// p99 latency of the inspected PreRequests, ms.
    pub inspected_pre_p99_ms: Option<f64>,
    /// Per second of the drive: the fraction of the calls that ended in it that were
    /// inspected (`None`: no call ended in it).
    pub inspected_by_second: Vec<Option<f64>>,
    /// Per agent: its share of the pool's capacity and of the calls the agents answered.
    pub agents: Vec<AgentShare>,
    /// Per flow (module source): its calls and the fraction inspected.
    pub flows: Vec<FlowInspected>,
    /// The fronts' CPU per call offered, µs (from `/proc`, sampled every 250 ms).
    pub front_cpu_us_per_call_offered: Option<f64>,
}

/// One agent's share of the capacity and of the calls served.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentShare {
    /// Its capacity in the window, RPC/s.
    pub capacity_rpc_s: f64,
    /// Its share of the pool's capacity.
    pub capacity_share: f64,
    /// Calls it answered in time (within 80 ms of their arrival) in the window, all methods.
    pub served: u64,
    /// Its share of the calls the agents answered in time.
    pub served_share: f64,
}

/// One flow's calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowInspected {
    /// Its name.
    pub name: String,
    /// Calls it made.
    pub calls: u64,
    /// Calls answered without error.
    pub inspected: u64,
    /// `inspected` ÷ `calls`.
    pub inspected_fraction: f64,
}

/// Calls each agent answered in time (`responses_timely`: within 80 ms) so far; `None` where
/// `/stats` could not be read.
pub(crate) async fn read_served(admins: &[SocketAddr]) -> Vec<Option<u64>> {
    let reads = admins.iter().map(|a| async move {
        let body = crate::http::get(*a, "/stats").await.ok()?;
        let s: crate::agent::AgentStats = serde_json::from_slice(&body).ok()?;
        Some(s.responses_timely)
    });
    futures::future::join_all(reads).await
}

/// The calls each agent answered between two readings.
pub(crate) fn served_between(start: &[Option<u64>], end: &[Option<u64>]) -> Vec<u64> {
    end.iter()
        .enumerate()
        .map(|(i, e)| {
            let s = start.get(i).copied().flatten().unwrap_or(0);
            e.map_or(0, |e| e.saturating_sub(s))
        })
        .collect()
}

impl OverloadReport {
    /// The figures of `r`: `capacities` are the agents' at the start; `window` the agents'
    /// capacities and the calls they answered in the share window; `cpu` the fronts' CPU.
    pub(crate) fn of(
        r: &DriveReport,
        capacities: &[f64],
        window: (&[f64], &[u64]),
        cpu: Option<Duration>,
    ) -> OverloadReport {
        let calls: u64 = r.tally.methods.values().map(|m| m.calls).sum();
        let ok: u64 = r.tally.methods.values().map(|m| m.ok).sum();
        let secs = r.elapsed_s.max(1e-9);
        let capacity: f64 = capacities.iter().sum();
        let ms = |l: &Option<crate::drive::Latency>| l.as_ref().map(|l| l.p99 as f64 / 1e3);
        OverloadReport {
            capacity_rpc_s: capacity,
            offered_rpc_s: calls as f64 / secs,
            inspected_rpc_s: ok as f64 / secs,
            capacity_fraction: if capacity > 0.0 {
                ok as f64 / secs / capacity
            } else {
                0.0
            },
            uninspected_p99_ms: ms(&r.inspection.uninspected_latency_us),
            inspected_pre_p99_ms: ms(&r.inspection.inspected_pre_latency_us),
            inspected_by_second: by_second(r),
            agents: shares(window.0, window.1),
            flows: r
                .flows
                .iter()
                .map(|f| {
                    let calls: u64 = f.tally.methods.values().map(|m| m.calls).sum();
                    let ok: u64 = f.tally.methods.values().map(|m| m.ok).sum();
                    FlowInspected {
                        name: f.name.clone(),
                        calls,
                        inspected: ok,
                        inspected_fraction: if calls > 0 {
                            ok as f64 / calls as f64
                        } else {
                            0.0
                        },
                    }
                })
                .collect(),
            front_cpu_us_per_call_offered: cpu
                .filter(|_| calls > 0)
                .map(|c| c.as_secs_f64() * 1e6 / calls as f64),
        }
    }

    /// The lines the run prints.
    pub(crate) fn lines(&self) -> Vec<String> {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
        let mut out = vec![format!(
            "overload: capacity {:.0} RPC/s, offered {:.0} RPC/s ({:.2}x), inspected {:.0} RPC/s = {:.1}% of capacity; not inspected p99 {}, inspected PreRequests p99 {}",
            self.capacity_rpc_s,
            self.offered_rpc_s,
            self.offered_rpc_s / self.capacity_rpc_s.max(1e-9),
            self.inspected_rpc_s,
            100.0 * self.capacity_fraction,
            ms(self.uninspected_p99_ms),
            ms(self.inspected_pre_p99_ms),
        )];
        let seconds: Vec<String> = self
            .inspected_by_second
            .iter()
            .map(|f| f.map_or("-".into(), |f| format!("{:.1}", 100.0 * f)))
            .collect();
        out.push(format!("inspected % by second: {}", seconds.join(" ")));
        let agents: Vec<String> = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "{i}: {:.1}% (capacity {:.1}%)",
                    100.0 * a.served_share,
                    100.0 * a.capacity_share
                )
            })
            .collect();
        out.push(format!(
            "agents' shares of calls served: {}",
            agents.join(", ")
        ));
        for f in &self.flows {
            out.push(format!(
                "flow {}: {:.2}% of {} calls inspected",
                f.name,
                100.0 * f.inspected_fraction,
                f.calls
            ));
        }
        if let Some(us) = self.front_cpu_us_per_call_offered {
            out.push(format!("fronts' CPU per call offered: {us:.1} µs"));
        }
        out
    }
}

/// The fraction of the calls that ended in each second that were answered.
fn by_second(r: &DriveReport) -> Vec<Option<f64>> {
    let per = (Duration::from_secs(1).as_nanos() / BUCKET.as_nanos()) as usize;
    r.timeline
        .chunks(per)
        .map(|c| {
            let calls: u64 = c.iter().map(|b| b.calls).sum();
            let errors: u64 = c.iter().map(|b| b.errors).sum();
            (calls > 0).then(|| (calls - errors) as f64 / calls as f64)
        })
        .collect()
}

fn shares(capacities: &[f64], served: &[u64]) -> Vec<AgentShare> {
    let cap: f64 = capacities.iter().sum();
    let all: u64 = served.iter().sum();
    capacities
        .iter()
        .zip(served)
        .map(|(&c, &s)| AgentShare {
            capacity_rpc_s: c,
            capacity_share: if cap > 0.0 { c / cap } else { 0.0 },
            served: s,
            served_share: if all > 0 { s as f64 / all as f64 } else { 0.0 },
        })
        .collect()
}

/// Every overload expectation of `e` (and of the scenario's `flows`) the run broke.
pub(crate) fn judge(o: &OverloadReport, e: &Expect, flows: &[Flow], end: Duration) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(min) = e.min_capacity_fraction
        && o.capacity_fraction < min
    {
        f.push(format!(
            "inspected {:.1}% of the pool's capacity (at least {:.0}% expected)",
            100.0 * o.capacity_fraction,
            100.0 * min
        ));
    }
    let over = |v: Option<f64>, max: Option<f64>| v.zip(max).filter(|(v, m)| v > m);
    if let Some((v, m)) = over(o.uninspected_p99_ms, e.max_uninspected_p99_ms) {
        f.push(format!(
            "calls not inspected answered in {v:.1} ms p99 (at most {m} ms)"
        ));
    }
    if let Some((v, m)) = over(o.inspected_pre_p99_ms, e.max_inspected_pre_p99_ms) {
        f.push(format!(
            "inspected PreRequests answered in {v:.1} ms p99 (at most {m} ms)"
        ));
    }
    for w in &e.inspected_window {
        let from = w.from.as_secs_f64().ceil() as usize;
        let to =
            (w.to.unwrap_or(end).as_secs_f64().floor() as usize).min(o.inspected_by_second.len());
        for (i, frac) in o.inspected_by_second.iter().enumerate().take(to).skip(from) {
            if frac.is_none_or(|v| v < w.min_fraction) {
                f.push(format!(
                    "second {i}..{}: {} inspected (at least {:.1}% expected from {:?} on)",
                    i + 1,
                    frac.map_or("no call".into(), |v| format!("{:.1}%", 100.0 * v)),
                    100.0 * w.min_fraction,
                    w.from
                ));
                break;
            }
        }
    }
    for (spec, got) in flows.iter().zip(&o.flows) {
        if let Some(min) = spec.min_inspected
            && got.inspected_fraction < min
        {
            f.push(format!(
                "flow {}: {:.2}% inspected (at least {:.1}% expected)",
                got.name,
                100.0 * got.inspected_fraction,
                100.0 * min
            ));
        }
    }
    if let Some(tol) = e.capacity_share_tolerance {
        for (i, a) in o.agents.iter().enumerate() {
            let off = (a.served_share - a.capacity_share).abs() / a.capacity_share.max(1e-9);
            if off > tol {
                f.push(format!(
                    "agent {i} answered {:.1}% of the calls, its capacity share is {:.1}% (within {:.0}% expected)",
                    100.0 * a.served_share,
                    100.0 * a.capacity_share,
                    100.0 * tol
                ));
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(toml_text: &str) -> crate::scenario::Expect {
        toml::from_str(toml_text).expect("an [expect] table")
    }

    #[test]
    fn a_window_fails_on_any_second_below_its_fraction_and_not_before_it_starts() {
        let o = OverloadReport {
            inspected_by_second: vec![Some(0.0), Some(0.2), Some(0.995), Some(1.0), None],
            ..OverloadReport::default()
        };
        let end = Duration::from_secs(4);
        let from = |s: u32| {
            expect(&format!(
                "[[inspected_window]]\nfrom = \"{s}s\"\nmin_fraction = 0.99"
            ))
        };
        assert_eq!(judge(&o, &from(1), &[], end).len(), 1, "second 1 has 20%");
        assert!(
            judge(&o, &from(2), &[], end).is_empty(),
            "{:?}",
            judge(&o, &from(2), &[], end)
        );
        // A second in the window in which no call ended is not inspected either.
        let to_the_end = Duration::from_secs(5);
        assert_eq!(judge(&o, &from(2), &[], to_the_end).len(), 1);
    }

    #[test]
    fn capacity_fraction_latency_flows_and_shares_are_each_judged() {
        let o = OverloadReport {
            capacity_fraction: 0.8,
            uninspected_p99_ms: Some(7.0),
            inspected_pre_p99_ms: Some(30.0),
            agents: shares(&[100.0, 200.0], &[150, 150]),
            flows: vec![FlowInspected {
                name: "b".into(),
                calls: 100,
                inspected: 98,
                inspected_fraction: 0.98,
            }],
            ..OverloadReport::default()
        };
        let flows: Vec<Flow> = vec![toml::from_str("rate = 10\nmin_inspected = 0.99").unwrap()];
        let end = Duration::from_secs(10);
        let e = expect(
            "min_capacity_fraction = 0.9\nmax_uninspected_p99_ms = 5\nmax_inspected_pre_p99_ms = 50\ncapacity_share_tolerance = 0.2",
        );
        let failures = judge(&o, &e, &flows, end);
        // Capacity, not-inspected latency, flow b, and both agents (50% each vs 33/67%).
        assert_eq!(failures.len(), 5, "{failures:#?}");
        let lenient = expect("min_capacity_fraction = 0.8\nmax_uninspected_p99_ms = 7");
        assert!(judge(&o, &lenient, &[], end).is_empty());
    }
}
