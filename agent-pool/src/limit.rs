//! The learned concurrency limit of one agent: how many calls this proxy replica keeps in
//! flight on it at once. Past the calls an agent serves in parallel, more in flight only queue
//! inside the agent, where a call the module has given up on still costs the agent its CPU and
//! delays every call behind it (docs/overload.md). The proxy keeps the rest in its own queue.
//!
//! The limit is learned, not configured: agents differ (their `SIGSCI_MAX_PROCS`, their node's
//! CPU, a neighbour on the node) and change. Every window (100 ms and at least 8 answers) the
//! mean latency of the window is held against a target derived from the agent's latency
//! without queueing (the least answer time of the last 10 s): twice it plus 2 ms of slack,
//! never above `max_target` (a quarter of the RPC deadline by default). Above target the limit
//! shrinks by a fifth (multiplicative decrease), and by half after a timeout; at or below target,
//! if the limit was reached in the window, it grows by a tenth, at least one. A new agent starts
//! at 2 in every replica and, until the first decrease, gains a slot per answer that did not
//! queue while the limit is reached (TCP's slow start: doubling every round trip) (Netflix's
//! concurrency-limits, AIMD against a latency gradient; Envoy's adaptive concurrency filter
//! samples the minimum against the current one the same way). Several replicas sharing an agent each see the latency
//! all of them cause, so together they settle where it stays at target.
//!
//! Under sustained saturation every answer has queued behind others, so the least answer time
//! would rise window after window. So a saturated agent is probed every 5 s (±20 %), as Envoy's
//! filter does: its limit drops to the minimum until the calls in flight have drained and two
//! more have answered, and their least answer time is the new baseline. Another replica's calls
//! still queue in the agent meanwhile; `max_target` bounds where that can lead (answers within a
//! quarter of the deadline).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

/// How the per-agent concurrency limit learns. Every field has a default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitConfig {
    /// The limit of an agent with no sample yet. Default 2: every replica starts here, so a
    /// rollout of replicas into a saturated pool of slow agents queues in each agent no more
    /// than a deadline's worth (at 8, two replicas queued 16 calls of 10 ms in one agent at
    /// once, and the first 400 ms timed out). Until the first decrease, while the limit is
    /// reached, every answer within `slack` of the latency without queueing adds a slot (TCP's
    /// slow start): the limit doubles every round trip until answers queue.
    pub initial: u32,
    /// The least limit. Default 1.
    pub min: u32,
    /// The greatest limit. Default 1,000.
    pub max: u32,
    /// Least length of a measuring window. Default 100 ms.
    pub window: Duration,
    /// Least answers in a window. Default 8.
    pub window_samples: u32,
    /// How long the least answer time counts as the agent's latency without queueing (two
    /// buckets of half of it). Default 10 s.
    pub baseline_window: Duration,
    /// Target = baseline × this + `slack`. Default 2.
    pub tolerance: f64,
    /// Added to the target: one scheduling hiccup. Default 2 ms.
    pub slack: Duration,
    /// The target never exceeds this. Default 20 ms (the proxy sets a quarter of
    /// `--rpc-timeout`).
    pub max_target: Duration,
    /// How often a saturated agent is probed for its latency without queueing: its limit drops
    /// to `min` until the calls in flight have drained and two more have answered. Default 5 s
    /// (±20 %).
    pub probe_every: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            initial: 2,
            min: 1,
            max: 1000,
            window: Duration::from_millis(100),
            window_samples: 8,
            baseline_window: Duration::from_secs(10),
            tolerance: 2.0,
            slack: Duration::from_millis(2),
            max_target: Duration::from_millis(20),
            probe_every: Duration::from_secs(5),
        }
    }
}

/// One agent's learned limit. `slots()` is read on the hot path without a lock; answers update
/// it under a short per-agent lock.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimit {
    slots: AtomicU32,
    /// The limit's integer part, probe or not.
    limit_floor: AtomicU32,
    /// Whether the calls in flight reached the limit since the last window ended.
    reached: AtomicBool,
    config: LimitConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    window_start_ns: u64,
    count: u32,
    sum_ns: f64,
    /// Least answer time in the current and the previous half of the baseline window.
    min_now: f64,
    min_before: f64,
    bucket_start_ns: u64,
    /// When the last decrease after a timeout happened (one per window).
    last_cut_ns: u64,
    /// A probe for the latency without queueing, while it runs.
    probe: Option<Probe>,
    /// Until the first decrease, growth doubles the limit.
    slow_start: bool,
    next_probe_ns: u64,
}

/// A probe: the limit held at its minimum until `needed` answers came (the calls that were in
/// flight, then two at the minimum); their least answer time is the new baseline.
#[derive(Debug)]
struct Probe {
    needed: u32,
    answers: u32,
    least: f64,
}

impl ConcurrencyLimit {
    pub(crate) fn new(config: LimitConfig, now_ns: u64) -> Self {
        let initial = config.initial.clamp(config.min.max(1), config.max.max(1));
        Self {
            slots: AtomicU32::new(initial),
            limit_floor: AtomicU32::new(initial),
            reached: AtomicBool::new(false),
            config,
            state: Mutex::new(State {
                limit: f64::from(initial),
                window_start_ns: now_ns,
                count: 0,
                sum_ns: 0.0,
                min_now: f64::INFINITY,
                min_before: f64::INFINITY,
                bucket_start_ns: now_ns,
                last_cut_ns: 0,
                probe: None,
                slow_start: true,
                next_probe_ns: now_ns + jittered(config.probe_every, now_ns),
            }),
        }
    }

    /// Calls this replica may have in flight on the agent now.
    #[inline]
    pub(crate) fn slots(&self) -> u32 {
        self.slots.load(Relaxed)
    }

    /// Calls in flight allowed by the limit itself, even while a probe holds `slots()` at the
    /// minimum (an UpdateRequest has no other agent to go to, and a probe must not hold it).
    #[inline]
    pub(crate) fn limit_slots(&self) -> u32 {
        self.limit_floor.load(Relaxed)
    }

    /// A call started with `in_flight` calls (itself included) on the agent.
    #[inline]
    pub(crate) fn started(&self, in_flight: u64) {
        if in_flight >= u64::from(self.slots()) {
            self.reached.store(true, Relaxed);
        }
    }

    /// An answer after `rtt_ns`, at `now_ns`.
    pub(crate) fn answered(&self, rtt_ns: f64, now_ns: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.probe.is_some() {
            self.probed(&mut s, rtt_ns, now_ns);
            return;
        }
        s.count += 1;
        s.sum_ns += rtt_ns;
        let half = self.config.baseline_window.as_nanos() as u64 / 2;
        if now_ns.saturating_sub(s.bucket_start_ns) >= half {
            s.min_before = s.min_now;
            s.min_now = f64::INFINITY;
            s.bucket_start_ns = now_ns;
        }
        s.min_now = s.min_now.min(rtt_ns);
        let window = self.config.window.as_nanos() as u64;
        let baseline = s.min_now.min(s.min_before);
        if s.slow_start
            && self.reached.load(Relaxed)
            && rtt_ns <= baseline + self.config.slack.as_nanos() as f64
        {
            // Slow start: one more slot per answer that did not queue (TCP's, per ACK), so a
            // limit that is reached doubles every round trip until answers show queueing.
            s.limit += 1.0;
            self.set(&mut s);
        }
        if now_ns.saturating_sub(s.window_start_ns) < window || s.count < self.config.window_samples
        {
            return;
        }
        let mean = s.sum_ns / f64::from(s.count);
        let target = self.target(s.min_now.min(s.min_before));
        let reached = self.reached.swap(false, Relaxed);
        if reached && now_ns >= s.next_probe_ns {
            // Saturated for long enough that every recent answer may have queued.
            s.probe = Some(Probe {
                needed: self.slots() + 2,
                answers: 0,
                least: f64::INFINITY,
            });
            self.slots.store(self.config.min.max(1), Relaxed);
            s.count = 0;
            s.sum_ns = 0.0;
            return;
        }
        if mean > target {
            s.limit *= 0.8;
            s.slow_start = false;
        } else if reached && !s.slow_start {
            s.limit += (s.limit * 0.1).max(1.0);
        }
        self.set(&mut s);
        s.window_start_ns = now_ns;
        s.count = 0;
        s.sum_ns = 0.0;
    }

    /// An answer while probing; the last one needed ends the probe.
    fn probed(&self, s: &mut State, rtt_ns: f64, now_ns: u64) {
        let Some(p) = s.probe.as_mut() else { return };
        p.answers += 1;
        p.least = p.least.min(rtt_ns);
        if p.answers < p.needed {
            return;
        }
        let least = p.least;
        s.probe = None;
        (s.min_now, s.min_before, s.bucket_start_ns) = (least, least, now_ns);
        s.next_probe_ns = now_ns + jittered(self.config.probe_every, now_ns);
        s.window_start_ns = now_ns;
        self.reached.store(false, Relaxed);
        self.set(s);
    }

    /// A call that got no answer within its deadline: the agent is far behind. Halves the
    /// limit, at most once per window.
    pub(crate) fn timed_out(&self, now_ns: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.config.window.as_nanos() as u64;
        if s.last_cut_ns != 0 && now_ns.saturating_sub(s.last_cut_ns) < window {
            return;
        }
        s.last_cut_ns = now_ns.max(1);
        s.limit *= 0.5;
        s.slow_start = false;
        self.set(&mut s);
    }

    /// The latency the window's mean is held to.
    fn target(&self, baseline_ns: f64) -> f64 {
        let c = &self.config;
        let wanted = baseline_ns * c.tolerance + c.slack.as_nanos() as f64;
        wanted.min(c.max_target.as_nanos() as f64)
    }

    fn set(&self, s: &mut State) {
        let (min, max) = (
            f64::from(self.config.min.max(1)),
            f64::from(self.config.max),
        );
        s.limit = s.limit.clamp(min, max.max(min));
        let floor = s.limit.floor() as u32;
        self.limit_floor.store(floor, Relaxed);
        self.slots.store(floor, Relaxed);
    }

    /// The limit with its fraction, and the target latency now (for `/agents`).
    pub(crate) fn view(&self) -> (f64, Duration) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let base = s.min_now.min(s.min_before);
        let target = if base.is_finite() {
            Duration::from_nanos(self.target(base) as u64)
        } else {
            Duration::ZERO
        };
        (s.limit, target)
    }
}

/// `every` ±20 %, drawn from the clock (agents probe at different moments).
fn jittered(every: Duration, now_ns: u64) -> u64 {
    let frac = (now_ns.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    (every.as_nanos() as f64 * (0.8 + 0.4 * frac)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A quiet moment: ten answers of `service_ms`, one call at a time.
    fn quiet(limit: &ConcurrencyLimit, service_ms: f64, from: u64) -> u64 {
        let mut now = from;
        for _ in 0..10 {
            limit.started(1);
            now += (service_ms * MS as f64) as u64;
            limit.answered(service_ms * MS as f64, now);
        }
        now
    }

    /// Plays an agent with `workers` FIFO workers of `service` ms each, kept saturated by one
    /// replica that holds `slots()` calls in flight: every answer takes
    /// `max(1, in_flight / workers) × service`.
    fn saturate(
        limit: &ConcurrencyLimit,
        workers: u32,
        service_ms: f64,
        from: u64,
        ms: u64,
    ) -> u64 {
        let mut now = quiet(limit, service_ms, from);
        let end = from + ms * MS;
        while now < end {
            let n = limit.slots();
            limit.started(u64::from(n));
            let rtt = (f64::from(n) / f64::from(workers)).max(1.0) * service_ms * MS as f64;
            // One answer per (service / workers) of time at saturation.
            now += (service_ms * MS as f64 / f64::from(workers)) as u64;
            limit.answered(rtt, now);
        }
        now
    }

    #[test]
    fn a_saturated_agent_gets_about_as_many_calls_as_it_has_workers() {
        for (workers, want) in [(1, 1..=3), (4, 4..=10)] {
            let limit = ConcurrencyLimit::new(LimitConfig::default(), 0);
            saturate(&limit, workers, 5.0, 0, 5_000);
            let slots = limit.slots();
            assert!(want.contains(&slots), "{workers} workers: {slots} slots");
        }
    }

    #[test]
    fn the_limit_follows_an_agent_that_slows_down_within_a_second() {
        let limit = ConcurrencyLimit::new(LimitConfig::default(), 0);
        let now = saturate(&limit, 4, 5.0, 0, 3_000);
        let before = limit.slots();
        saturate(&limit, 2, 5.0, now, 1_000);
        let after = limit.slots();
        assert!(after <= 5 && after < before, "{before} -> {after}");
    }

    #[test]
    fn an_idle_agent_keeps_its_limit() {
        let limit = ConcurrencyLimit::new(LimitConfig::default(), 0);
        for i in 1..=100 {
            limit.started(1);
            limit.answered(0.3 * MS as f64, i * 20 * MS);
        }
        assert_eq!(
            limit.slots(),
            2,
            "never reached: no growth, fast: no decrease"
        );
    }

    #[test]
    fn a_fast_agent_reaches_its_parallelism_from_its_start_of_two_within_milliseconds() {
        // Sixteen workers of 1 ms, kept saturated: slow start adds a slot per answer that did
        // not queue, and stops where answers start to queue.
        let limit = ConcurrencyLimit::new(LimitConfig::default(), 0);
        assert_eq!(limit.slots(), 2);
        saturate(&limit, 16, 1.0, 0, 20);
        // At most where an answer takes 2 ms more than alone (48 in flight, 3 ms), inside the
        // 4 ms target (twice 1 ms plus 2).
        assert!(
            (16..=50).contains(&limit.slots()),
            "{} slots",
            limit.slots()
        );
    }

    #[test]
    fn updates_follow_the_learned_limit_and_a_probe_does_not_hold_them() {
        let limit = ConcurrencyLimit::new(LimitConfig::default(), 0);
        saturate(&limit, 16, 1.0, 0, 400);
        let learned = limit.slots();
        assert!(learned > 2);
        assert_eq!(limit.limit_slots(), learned, "not the initial limit");
        let config = LimitConfig {
            initial: 8,
            probe_every: Duration::from_millis(1),
            ..LimitConfig::default()
        };
        let probed = ConcurrencyLimit::new(config, 0);
        // A saturated window starts a probe: balanced calls get one slot, updates keep theirs.
        for i in 1..=15 {
            probed.started(8);
            probed.answered(MS as f64, i * 10 * MS);
        }
        assert_eq!(probed.slots(), 1);
        assert!(probed.limit_slots() >= 8);
    }

    #[test]
    fn a_timeout_halves_the_limit_once_per_window() {
        let config = LimitConfig {
            initial: 16,
            ..LimitConfig::default()
        };
        let limit = ConcurrencyLimit::new(config, 0);
        limit.timed_out(10 * MS);
        limit.timed_out(20 * MS);
        assert_eq!(limit.slots(), 8);
        limit.timed_out(200 * MS);
        assert_eq!(limit.slots(), 4);
    }

    #[test]
    fn probes_keep_the_target_at_the_latency_without_queueing_under_sustained_saturation() {
        let limit = ConcurrencyLimit::new(LimitConfig::default(), 0);
        // 60 s saturated with one worker of 5 ms: without probes every answer after the first
        // seconds has queued, and the target would climb to its cap.
        saturate(&limit, 1, 5.0, 0, 60_000);
        let (_, target) = limit.view();
        assert!(target <= Duration::from_millis(12), "{target:?}");
        assert!(limit.slots() <= 3, "{} slots", limit.slots());
    }

    #[test]
    fn the_target_is_capped_so_a_standing_queue_cannot_raise_it_forever() {
        let config = LimitConfig {
            probe_every: Duration::from_secs(3600),
            ..LimitConfig::default()
        };
        let limit = ConcurrencyLimit::new(config, 0);
        // 60 s saturated with one worker of 5 ms: each baseline bucket sees only queued answers.
        saturate(&limit, 1, 5.0, 0, 60_000);
        let (_, target) = limit.view();
        assert!(target <= Duration::from_millis(20), "{target:?}");
        // The sawtooth around the cap: 4 answers at 20 ms, one more for a window before it backs off.
        assert!(limit.slots() <= 5, "{} slots", limit.slots());
    }
}
