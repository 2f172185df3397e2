//! Which flows (module sources) sent the most calls into the overload queue lately, for the
//! admin endpoint `/flows`: an operator asks "who is flooding the pool" without a per-client
//! metric label (client addresses are unbounded input). Counted only for calls that found every
//! agent at its limit, so a quiet proxy keeps nothing; at most [`MAX_FLOWS`] flows per window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Flow;

/// Flows remembered per window; calls of further flows count under "other flows".
pub(crate) const MAX_FLOWS: usize = 4096;

/// How long a window lasts; `/flows` shows the last complete one and the current one.
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    queued: u64,
    shed: u64,
}

/// Per-flow counts over the current and the previous window.
#[derive(Debug, Default)]
pub(crate) struct FlowStats {
    started: Option<Instant>,
    now: HashMap<Flow, Counts>,
    before: HashMap<Flow, Counts>,
    other: Counts,
}

/// One row of `/flows`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct FlowRow {
    /// The module source: an address, or a process on a Unix socket.
    pub(crate) flow: String,
    /// Calls that met every agent at its limit, over the last 10-20 s.
    pub(crate) offered_while_saturated: u64,
    /// Of those, shed on arrival (the rest waited; some of them may have expired later).
    pub(crate) shed_on_arrival: u64,
}

impl FlowStats {
    /// A call of `flow` met every agent at its limit; `shed` if it was refused at once.
    pub(crate) fn offered(&mut self, flow: &Flow, shed: bool, at: Instant) {
        self.roll(at);
        let counts = if self.now.contains_key(flow) || self.now.len() < MAX_FLOWS {
            self.now.entry(flow.clone()).or_default()
        } else {
            &mut self.other
        };
        counts.queued += 1;
        counts.shed += u64::from(shed);
    }

    /// Whether a call of `flow` was shed on arrival in the last 10-20 s: a flow sending more
    /// than its share.
    pub(crate) fn recently_shed(&self, flow: &Flow) -> bool {
        [&self.now, &self.before]
            .iter()
            .any(|w| w.get(flow).is_some_and(|c| c.shed > 0))
    }

    fn roll(&mut self, at: Instant) {
        let started = *self.started.get_or_insert(at);
        if at.saturating_duration_since(started) >= WINDOW {
            self.before = std::mem::take(&mut self.now);
            self.other = Counts::default();
            // Two windows without a call: nothing recent to show.
            if at.saturating_duration_since(started) >= 2 * WINDOW {
                self.before.clear();
            }
            self.started = Some(at);
        }
    }

    /// The `n` flows with the most calls in the last two windows, most first.
    pub(crate) fn heaviest(&mut self, n: usize, at: Instant) -> Vec<FlowRow> {
        self.roll(at);
        let mut sum: HashMap<&Flow, Counts> = HashMap::new();
        for (flow, c) in self.before.iter().chain(self.now.iter()) {
            let s = sum.entry(flow).or_default();
            s.queued += c.queued;
            s.shed += c.shed;
        }
        let mut rows: Vec<FlowRow> = sum
            .into_iter()
            .map(|(flow, c)| FlowRow {
                flow: flow.to_string(),
                offered_while_saturated: c.queued,
                shed_on_arrival: c.shed,
            })
            .collect();
        if self.other.queued > 0 {
            rows.push(FlowRow {
                flow: "other flows".into(),
                offered_while_saturated: self.other.queued,
                shed_on_arrival: self.other.shed,
            });
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.offered_while_saturated));
        rows.truncate(n);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flooding_flow_comes_first_and_old_windows_are_forgotten() {
        let mut stats = FlowStats::default();
        let t0 = Instant::now();
        let flood = Flow::ip([10, 0, 0, 1].into());
        let light = Flow::ip([10, 0, 0, 2].into());
        for _ in 0..50 {
            stats.offered(&flood, true, t0);
        }
        stats.offered(&light, false, t0);
        let rows = stats.heaviest(10, t0 + Duration::from_secs(11));
        assert_eq!(rows[0].flow, "10.0.0.1");
        assert_eq!(
            (rows[0].offered_while_saturated, rows[0].shed_on_arrival),
            (50, 50)
        );
        assert_eq!(rows[1].flow, "10.0.0.2");
        assert!(stats.heaviest(10, t0 + Duration::from_secs(40)).is_empty());
    }
}
