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
    /// Calls counted in `now` and in `before`, all flows.
    total_now: u64,
    total_before: u64,
}

/// One row of `/flows`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct FlowRow {
    /// The module source: an address, or a process on a Unix socket.
    pub(crate) flow: String,
    /// Calls that met every agent at its limit, over the last 10-20 s.
    pub(crate) offered_while_saturated: u64,
    /// Of those, shed (on arrival, or after waiting in vain).
    pub(crate) shed: u64,
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
        self.total_now += 1;
    }

    /// A call of `flow` that waited was shed (expired): it counts as shed, not as offered again.
    pub(crate) fn shed(&mut self, flow: &Flow, at: Instant) {
        self.roll(at);
        if let Some(c) = self.now.get_mut(flow) {
            c.shed += 1;
        } else {
            self.other.shed += 1;
        }
    }

    /// Whether `flow` sent at least its share of the calls that met a saturated pool in the
    /// last 10-20 s (at least the mean over the flows seen): a flood, or one of several equal
    /// flows, and not a light flow beside a flood.
    pub(crate) fn is_heavy(&self, flow: &Flow) -> bool {
        let mine = [&self.now, &self.before]
            .iter()
            .filter_map(|w| w.get(flow))
            .map(|c| c.queued)
            .sum::<u64>();
        let flows = self.now.len().max(self.before.len()).max(1) as u64;
        mine > 0 && mine * flows >= self.total_now + self.total_before
    }

    /// Whether `flow` sent less than its share while another flow sent calls too: a light
    /// flow beside a heavier one (a flow alone, or one with nothing counted against a pool that
    /// saw nothing, is not).
    pub(crate) fn is_light(&self, flow: &Flow) -> bool {
        self.total_now + self.total_before > 0 && !self.is_heavy(flow)
    }

    fn roll(&mut self, at: Instant) {
        let started = *self.started.get_or_insert(at);
        if at.saturating_duration_since(started) >= WINDOW {
            self.before = std::mem::take(&mut self.now);
            self.other = Counts::default();
            self.total_before = std::mem::take(&mut self.total_now);
            // Two windows without a call: nothing recent to show.
            if at.saturating_duration_since(started) >= 2 * WINDOW {
                self.before.clear();
                self.total_before = 0;
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
                shed: c.shed,
            })
            .collect();
        if self.other.queued > 0 {
            rows.push(FlowRow {
                flow: "other flows".into(),
                offered_while_saturated: self.other.queued,
                shed: self.other.shed,
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
        assert_eq!((rows[0].offered_while_saturated, rows[0].shed), (50, 50));
        assert_eq!(rows[1].flow, "10.0.0.2");
        assert!(stats.is_heavy(&flood) && !stats.is_heavy(&light));
        assert!(stats.heaviest(10, t0 + Duration::from_secs(40)).is_empty());
    }
}
