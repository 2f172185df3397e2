//! Crate tests that drive the pool with explicit instants (the crate-internal `*_at` methods),
//! so backoffs, grace periods and hint windows are checked without waiting or flaking.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::picker::two_distinct;
use crate::{
    Agent, AgentState, EjectionConfig, Endpoint, EndpointId, HintsConfig, InFlight, Outcome, Pool,
    PoolConfig, SourceState, Update,
};

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
const S: Duration = Duration::from_secs(1);

fn ep(i: usize) -> Endpoint {
    Endpoint::new(format!("10.0.0.{}:9999", i + 1).parse().unwrap())
}

/// A pool of `n` ready agents, and an instant after its epoch.
fn pool_of(n: usize, config: PoolConfig) -> (Pool, Instant) {
    let pool = Pool::new(config);
    let t0 = Instant::now();
    pool.apply_at(Update::Reset((0..n).map(ep).collect()), t0);
    (pool, t0)
}

fn agent(pool: &Pool, i: usize) -> Arc<Agent> {
    let id = ep(i).id;
    pool.snapshot()
        .agents()
        .iter()
        .find(|a| *a.id() == id)
        .unwrap()
        .clone()
}

fn count_picks(pool: &Pool, now: Instant, picks: usize) -> HashMap<EndpointId, usize> {
    let snap = pool.snapshot();
    let mut counts = HashMap::new();
    for _ in 0..picks {
        let a = snap.pick_at(now, None).expect("an agent");
        *counts.entry(a.id().clone()).or_insert(0) += 1;
    }
    counts
}

/// One request on `a` from `at` taking `took`, ending with `outcome`.
fn request(a: &Arc<Agent>, at: Instant, took: Duration, outcome: Outcome) {
    a.start_at(at).finish_at(outcome, at + took);
}

#[test]
fn equal_agents_share_picks_within_5_percent() {
    let (pool, t0) = pool_of(10, PoolConfig::default());
    let counts = count_picks(&pool, t0, 100_000);
    assert_eq!(counts.len(), 10);
    for (id, n) in &counts {
        assert!((9_500..=10_500).contains(n), "{id}: {n} picks of 100000");
    }
}

#[test]
fn a_slow_agent_gets_less() {
    let (pool, t0) = pool_of(4, PoolConfig::default());
    request(&agent(&pool, 0), t0, 50 * MS, Outcome::Success);
    for i in 1..4 {
        request(&agent(&pool, i), t0, MS, Outcome::Success);
    }
    let counts = count_picks(&pool, t0 + 50 * MS, 10_000);
    let slow = counts.get(&ep(0).id).copied().unwrap_or(0);
    // Fair share is 2500; P2C never keeps the costliest of two.
    assert!(slow < 500, "slow agent got {slow} of 10000");
}

/// Three seconds of one answer a millisecond taking `took`: the estimate settles on `took`.
fn settle(a: &Arc<Agent>, from: Instant, took: Duration) -> Instant {
    let mut t = from;
    for _ in 0..3_000 {
        request(a, t, took, Outcome::Success);
        t += MS;
    }
    t + took
}

#[test]
fn two_nearly_equal_agents_share_evenly_but_a_clearly_faster_one_wins() {
    // With two agents P2C compares the same pair on every pick: latency noise must not decide.
    let (pool, t0) = pool_of(2, PoolConfig::default());
    settle(&agent(&pool, 0), t0, 1_000 * US);
    let t = settle(&agent(&pool, 1), t0, 1_100 * US);
    let counts = count_picks(&pool, t, 10_000);
    let first = counts.get(&ep(0).id).copied().unwrap_or(0);
    assert!(
        (4_500..=5_500).contains(&first),
        "10% apart: {first} of 10000"
    );

    let (pool, t0) = pool_of(2, PoolConfig::default());
    settle(&agent(&pool, 0), t0, MS);
    let t = settle(&agent(&pool, 1), t0, 2 * MS);
    let counts = count_picks(&pool, t, 10_000);
    let fast = counts.get(&ep(0).id).copied().unwrap_or(0);
    assert_eq!(fast, 10_000, "twice as fast wins every comparison");
}

#[test]
fn one_latency_hiccup_is_forgotten_within_seconds() {
    let (pool, t0) = pool_of(1, PoolConfig::default());
    let a = agent(&pool, 0);
    request(&a, t0, MS, Outcome::Success);
    // One 50 ms stall (a descheduled agent on a busy node)...
    request(&a, t0 + MS, 50 * MS, Outcome::Success);
    assert!(a.latency_ewma() >= 49 * MS);
    // ...then 1 ms answers, a thousand a second, for 5 s.
    let mut t = t0 + 51 * MS;
    for _ in 0..5_000 {
        request(&a, t, MS, Outcome::Success);
        t += MS;
    }
    let est = a.latency_ewma_at(t);
    assert!(est < 2 * MS, "estimate still {est:?} 5 s after the stall");
}

#[test]
fn an_agent_with_many_outstanding_gets_less() {
    let (pool, t0) = pool_of(4, PoolConfig::default());
    let busy = agent(&pool, 0);
    let held: Vec<InFlight> = (0..20).map(|_| busy.start_at(t0)).collect();
    assert_eq!(busy.outstanding(), 20);
    let counts = count_picks(&pool, t0, 10_000);
    assert!(
        counts.get(&ep(0).id).copied().unwrap_or(0) < 500,
        "{counts:?}"
    );
    drop(held);
    assert_eq!(busy.outstanding(), 0);
    assert_eq!(busy.stats().cancelled, 20);
}

#[test]
fn load_and_counters_survive_membership_changes() {
    let (pool, t0) = pool_of(2, PoolConfig::default());
    let a = agent(&pool, 0);
    let in_flight = a.start_at(t0);
    pool.apply_at(Update::Upsert(ep(5)), t0);
    pool.apply_at(Update::Reset(vec![ep(0), ep(5)]), t0);
    assert!(
        Arc::ptr_eq(&a, &agent(&pool, 0)),
        "same Arc<Agent> across snapshots"
    );
    assert_eq!(agent(&pool, 0).outstanding(), 1);
    // Leaves, comes back within the grace: the same agent, counters intact.
    pool.apply_at(Update::Remove(ep(0).id), t0 + S);
    assert_eq!(a.state_at(t0 + S), AgentState::Gone);
    pool.apply_at(Update::Upsert(ep(0)), t0 + 2 * S);
    assert!(Arc::ptr_eq(&a, &agent(&pool, 0)));
    assert_eq!(a.state_at(t0 + 2 * S), AgentState::Ready);
    in_flight.finish_at(Outcome::Success, t0 + 2 * S);
    assert_eq!(a.stats().successes, 1);
    assert_eq!(a.outstanding(), 0);
}

#[test]
fn terminating_agents_get_no_new_work_but_are_found_by_token() {
    let (pool, t0) = pool_of(3, PoolConfig::default());
    let leaving = agent(&pool, 1);
    pool.apply_at(
        Update::Upsert(ep(1).with_state(SourceState::Terminating)),
        t0,
    );
    let snap = pool.snapshot();
    assert_eq!(leaving.state_at(t0), AgentState::Terminating);
    assert_eq!(snap.ready_len_at(t0), 2);
    assert!(!count_picks(&pool, t0, 2_000).contains_key(leaving.id()));
    let found = snap
        .by_token_at(leaving.token(), t0)
        .expect("terminating agent by token");
    assert!(Arc::ptr_eq(&found, &leaving));
}

#[test]
fn gone_agents_stay_reachable_for_the_grace_period_then_drop() {
    let (pool, t0) = pool_of(2, PoolConfig::default());
    let gone = agent(&pool, 0);
    pool.apply_at(Update::Reset(vec![ep(1)]), t0);
    let snap = pool.snapshot();
    assert_eq!(snap.agents().len(), 2);
    assert!(!count_picks(&pool, t0, 1_000).contains_key(gone.id()));
    assert!(snap.by_token_at(gone.token(), t0 + 29 * S).is_some());
    assert!(
        snap.by_token_at(gone.token(), t0 + 31 * S).is_none(),
        "even in an old snapshot"
    );
    pool.tick(t0 + 29 * S);
    assert_eq!(pool.snapshot().agents().len(), 2);
    pool.tick(t0 + 31 * S);
    assert_eq!(pool.snapshot().agents().len(), 1);
    assert!(
        pool.snapshot()
            .by_token_at(gone.token(), t0 + 31 * S)
            .is_none()
    );
}

#[test]
fn consecutive_failures_eject_with_doubling_backoff() {
    let (pool, t0) = pool_of(4, PoolConfig::default());
    let a = agent(&pool, 0);
    // The others are busy, so `a` is the cheapest whenever it takes work.
    let _busy: Vec<InFlight> = (1..4).map(|i| agent(&pool, i).start_at(t0)).collect();
    let mut t = t0;
    let fail = |n: usize, t: &mut Instant, outcome| {
        for _ in 0..n {
            request(&a, *t, MS, outcome);
            *t += MS;
        }
    };
    fail(4, &mut t, Outcome::ConnectFailure);
    assert_eq!(a.state_at(t), AgentState::Ready);
    fail(1, &mut t, Outcome::Timeout);
    assert_eq!(a.state_at(t), AgentState::Ejected);
    assert!(!count_picks(&pool, t, 2_000).contains_key(a.id()));
    // First ejection: 1 s.
    assert_eq!(a.state_at(t + 990 * MS), AgentState::Ejected);
    t += S;
    pool.tick(t);
    assert_eq!(a.state_at(t), AgentState::Ready, "back after the backoff");
    // Second ejection without a success in between: 2 s.
    fail(5, &mut t, Outcome::ConnectFailure);
    assert_eq!(a.state_at(t + 1900 * MS), AgentState::Ejected);
    assert_eq!(a.state_at(t + 2 * S), AgentState::Ready);
    t += 2 * S;
    // A success resets both the count and the backoff.
    fail(4, &mut t, Outcome::ConnectFailure);
    request(&a, t, MS, Outcome::Success);
    fail(4, &mut t, Outcome::ConnectFailure);
    assert_eq!(
        a.state_at(t),
        AgentState::Ready,
        "a success resets the count"
    );
    fail(1, &mut t, Outcome::ConnectFailure);
    assert_eq!(a.state_at(t + 990 * MS), AgentState::Ejected);
    assert_eq!(a.state_at(t + S), AgentState::Ready, "and the backoff");
    assert_eq!(a.stats().ejections, 3);
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let c = EjectionConfig::default();
    let got: Vec<u64> = (0..8).map(|l| c.backoff(l).as_secs()).collect();
    assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(c.backoff(u32::MAX), Duration::from_secs(30));
}

#[test]
fn every_failure_but_a_busy_queue_counts_toward_ejection() {
    for outcome in [Outcome::ErrorAnswer, Outcome::Failed] {
        let (pool, t0) = pool_of(2, PoolConfig::default());
        let a = agent(&pool, 0);
        for i in 0..5 {
            request(&a, t0 + i * MS, 200 * US, outcome);
        }
        assert_eq!(a.state_at(t0 + 6 * MS), AgentState::Ejected, "{outcome:?}");
        assert_eq!(a.stats().failures, 5);
    }
    let (pool, t0) = pool_of(2, PoolConfig::default());
    let a = agent(&pool, 0);
    for i in 0..20 {
        request(&a, t0 + i * MS, MS, Outcome::Busy);
    }
    assert_eq!(a.state_at(t0 + S), AgentState::Ready, "busy is not broken");
    assert_eq!((a.stats().failures, a.stats().busy), (0, 20));
}

#[test]
fn a_fast_error_answer_makes_an_agent_dear_not_cheap() {
    // Three agents at 300 µs; one starts answering errors in 200 µs. Before the penalty it was
    // the cheapest and drew a third or more of the picks; now it must draw almost none.
    let (pool, t0) = pool_of(3, PoolConfig::default());
    for i in 0..3 {
        for k in 0..20 {
            request(&agent(&pool, i), t0 + k * MS, 300 * US, Outcome::Success);
        }
    }
    let t = t0 + 30 * MS;
    request(&agent(&pool, 0), t, 200 * US, Outcome::ErrorAnswer);
    let counts = count_picks(&pool, t + MS, 10_000);
    let bad = counts.get(agent(&pool, 0).id()).copied().unwrap_or(0);
    assert_eq!(
        bad, 0,
        "an error answer costs like a 50 ms call: {counts:?}"
    );
}

#[test]
fn after_its_backoff_an_agent_is_on_trial_one_failure_ejects_it_again() {
    let (pool, t0) = pool_of(4, PoolConfig::default());
    let a = agent(&pool, 0);
    for _ in 0..5 {
        request(&a, t0, MS, Outcome::Timeout);
    }
    assert_eq!(a.state_at(t0 + MS), AgentState::Ejected);
    // The sweep (or a pick) ends the ejection after 1 s: one failure re-ejects, for 2 s.
    pool.tick(t0 + S + MS);
    assert_eq!(a.state_at(t0 + S + MS), AgentState::Ready);
    request(&a, t0 + S + MS, MS, Outcome::Timeout);
    assert_eq!(a.state_at(t0 + S + 3 * MS), AgentState::Ejected);
    assert_eq!(a.state_at(t0 + 3 * S), AgentState::Ejected, "2 s this time");
    // A success on trial clears the record: five failures again before the next ejection.
    pool.tick(t0 + 4 * S);
    request(&a, t0 + 4 * S, MS, Outcome::Success);
    for k in 0..4 {
        request(&a, t0 + 4 * S + k * MS, MS, Outcome::Timeout);
    }
    assert_eq!(a.state_at(t0 + 4 * S + 5 * MS), AgentState::Ready);
}

#[test]
fn an_unreachable_agent_is_readmitted_on_a_successful_connect_a_stalling_one_is_not() {
    // Six agents: three may be ejected at once.
    let (pool, t0) = pool_of(6, PoolConfig::default());
    let (a, b, c) = (agent(&pool, 0), agent(&pool, 1), agent(&pool, 2));
    for _ in 0..5 {
        request(&a, t0, MS, Outcome::ConnectFailure);
    }
    assert!(a.is_ejected());
    assert!(
        a.probed(true, None),
        "unreachable, then a connect succeeded"
    );
    assert_eq!(a.state(), AgentState::Ready);
    assert!(!a.probed(true, None), "reachable is no news any more");
    assert!(
        a.latency_ewma() <= PoolConfig::default().default_rtt,
        "a fresh estimate: the old process's failures say nothing of the new one"
    );
    // On trial: one failure ejects it again.
    request(&a, t0 + MS, MS, Outcome::ConnectFailure);
    assert!(a.is_ejected());

    // Timeouts, and every probe connects: nothing new; it waits out its backoff.
    let now = Instant::now();
    for _ in 0..5 {
        request(&b, now, MS, Outcome::Timeout);
    }
    assert!(b.is_ejected());
    assert!(!b.probed(true, None));
    assert_eq!(b.state(), AgentState::Ejected);

    // Calls broke (the process was killed mid-call), then a probe is refused, then one
    // connects (restarted): readmitted.
    for _ in 0..5 {
        request(&c, now, MS, Outcome::Failed);
    }
    assert!(c.is_ejected());
    assert!(
        !c.probed(true, None),
        "answering connects all along: no news"
    );
    assert!(!c.probed(false, None));
    assert!(
        c.probed(true, None),
        "refused, then accepted: a new process"
    );
    assert_eq!(c.state(), AgentState::Ready);
}

#[test]
fn when_every_agent_terminates_new_work_goes_to_the_terminating_ones() {
    let (pool, t0) = pool_of(2, PoolConfig::default());
    let terminating = |i| Endpoint {
        state: SourceState::Terminating,
        ..ep(i)
    };
    pool.apply_at(Update::Upsert(terminating(0)), t0);
    let counts = count_picks(&pool, t0, 100);
    assert_eq!(
        counts.len(),
        1,
        "the ready one while there is one: {counts:?}"
    );
    assert!(counts.contains_key(agent(&pool, 1).id()));
    pool.apply_at(Update::Upsert(terminating(1)), t0);
    let counts = count_picks(&pool, t0, 1_000);
    assert_eq!(counts.len(), 2, "then both terminating ones: {counts:?}");
    assert_eq!(pool.snapshot().ready_len_at(t0), 0);
    // Gone agents never take new work.
    pool.apply_at(Update::Reset(vec![]), t0);
    assert!(pool.snapshot().pick_at(t0, None).is_none());
}

#[test]
fn at_most_the_configured_fraction_is_ejected() {
    let (pool, t0) = pool_of(4, PoolConfig::default());
    for i in 0..4 {
        for _ in 0..10 {
            request(&agent(&pool, i), t0, MS, Outcome::ConnectFailure);
        }
    }
    let t = t0 + 10 * MS;
    let ejected = (0..4)
        .filter(|&i| agent(&pool, i).state_at(t) == AgentState::Ejected)
        .count();
    assert_eq!(ejected, 2, "50% of 4");
    assert_eq!(pool.snapshot().ready_len_at(t), 2);
    assert!(pool.snapshot().pick_at(t, None).is_some());

    // A lone agent is never ejected, whatever the fraction.
    let one = PoolConfig {
        ejection: EjectionConfig {
            max_ejected_fraction: 1.0,
            ..EjectionConfig::default()
        },
        ..PoolConfig::default()
    };
    let (pool, t0) = pool_of(1, one);
    for _ in 0..10 {
        request(&agent(&pool, 0), t0, MS, Outcome::Timeout);
    }
    assert_eq!(agent(&pool, 0).state_at(t0 + 10 * MS), AgentState::Ready);
}

#[test]
fn an_ejection_slot_frees_when_the_backoff_ends_or_the_agent_leaves() {
    let (pool, t0) = pool_of(2, PoolConfig::default());
    let (a, b) = (agent(&pool, 0), agent(&pool, 1));
    for _ in 0..5 {
        request(&a, t0, MS, Outcome::ConnectFailure);
        request(&b, t0, MS, Outcome::ConnectFailure);
    }
    assert_eq!(a.state_at(t0 + MS), AgentState::Ejected);
    assert_eq!(b.state_at(t0 + MS), AgentState::Ready, "one of two at most");
    // The tick ends a's ejection; b's next failure may then eject it.
    pool.tick(t0 + 2 * S);
    request(&b, t0 + 2 * S, MS, Outcome::ConnectFailure);
    assert_eq!(b.state_at(t0 + 2 * S + MS), AgentState::Ejected);
    // b leaves while ejected: its slot frees for a.
    pool.apply_at(Update::Remove(b.id().clone()), t0 + 2 * S);
    pool.apply_at(Update::Upsert(ep(2)), t0 + 2 * S);
    for _ in 0..5 {
        request(&a, t0 + 2 * S, MS, Outcome::ConnectFailure);
    }
    assert_eq!(a.state_at(t0 + 2 * S + MS), AgentState::Ejected);
}

#[test]
fn pick_excluding_never_returns_the_excluded_agent() {
    let (pool, t0) = pool_of(2, PoolConfig::default());
    let snap = pool.snapshot();
    let first = snap.pick_at(t0, None).unwrap();
    for _ in 0..1_000 {
        let other = snap.pick_at(t0, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&other, &first));
    }
    let (pool, t0) = pool_of(1, PoolConfig::default());
    let only = pool.snapshot().pick_at(t0, None).unwrap();
    assert!(pool.snapshot().pick_at(t0, Some(&only)).is_none());
}

#[test]
fn an_empty_pool_picks_nothing() {
    let pool = Pool::new(PoolConfig::default());
    assert!(pool.snapshot().pick().is_none());
    assert_eq!(pool.snapshot().ready_len(), 0);
}

fn hints_config() -> HintsConfig {
    HintsConfig {
        target_outstanding_per_agent: 10.0,
        target_rpc_per_agent: None,
        smoothing: Duration::ZERO,
        ..HintsConfig::default()
    }
}

#[test]
fn demand_follows_load_both_ways_at_once_with_no_window_or_rounding() {
    let config = PoolConfig {
        hints: hints_config(),
        ..PoolConfig::default()
    };
    let (pool, t0) = pool_of(4, config);
    pool.tick(t0);
    let h = pool.hints();
    assert_eq!(
        (h.demand, h.recommended),
        (0.0, 1),
        "idle: no floor on demand"
    );
    // 35 outstanding over 4 agents: 3.5 agents' worth, at the next tick.
    let mut held: Vec<InFlight> = (0..35).map(|i| agent(&pool, i % 4).start_at(t0)).collect();
    pool.tick(t0 + S);
    let h = pool.hints();
    assert!((h.demand - 3.5).abs() < 1e-9, "{h:?}");
    assert_eq!((h.recommended, h.by_outstanding), (4, 4));
    assert!((h.utilization - 35.0 / 40.0).abs() < 1e-9, "{h:?}");
    // Load drops to 12: 1.2 at the next tick. The autoscaler's window, not the proxy, decides
    // when the pool shrinks.
    held.truncate(12);
    pool.tick(t0 + 2 * S);
    let h = pool.hints();
    assert!((h.demand - 1.2).abs() < 1e-9, "{h:?}");
    assert_eq!(h.recommended, 2);
    // Back up: at once.
    held.extend((0..50).map(|i| agent(&pool, i % 4).start_at(t0)));
    pool.tick(t0 + 3 * S);
    assert!((pool.hints().demand - 6.2).abs() < 1e-9);
    assert_eq!(pool.hints().recommended, 7);
}

/// Two proxy replicas share a light load over the same four agents: each exports its own
/// fraction of an agent, their sum is below one agent, so `ceil(sum)` asks for one agent. The
/// per-replica `recommended` (rounded up, at least `min_agents`) would have summed to two.
#[test]
fn two_proxies_sharing_a_light_load_sum_to_less_than_one_agent() {
    let hints = HintsConfig {
        target_outstanding_per_agent: 8.0,
        target_rpc_per_agent: Some(1000.0),
        smoothing: Duration::ZERO,
        ..HintsConfig::default()
    };
    let config = || PoolConfig {
        hints: hints.clone(),
        ..PoolConfig::default()
    };
    let (a, t0) = pool_of(4, config());
    let (b, _) = pool_of(4, config());
    a.tick(t0);
    b.tick(t0);
    // In one second: 300 RPCs through proxy a and 150 through proxy b (450 RPC/s in all),
    // with 2 and 1 still outstanding at the tick.
    for i in 0..300 {
        request(&agent(&a, i % 4), t0, MS, Outcome::Success);
    }
    for i in 0..150 {
        request(&agent(&b, i % 4), t0, MS, Outcome::Success);
    }
    let _held_a: Vec<InFlight> = (0..2).map(|i| agent(&a, i).start_at(t0)).collect();
    let _held_b = agent(&b, 0).start_at(t0);
    a.tick(t0 + S);
    b.tick(t0 + S);
    let (ha, hb) = (a.hints(), b.hints());
    // By rate: (300 + 2) / 1000 and (150 + 1) / 1000 (the held ones started in this second
    // too); by outstanding: 2 / 8 and 1 / 8. Each takes the larger.
    assert!((ha.demand - 0.302).abs() < 1e-9, "{ha:?}");
    assert!((hb.demand - 0.151).abs() < 1e-9, "{hb:?}");
    let sum = ha.demand + hb.demand;
    assert!(sum < 1.0, "summed demand {sum}");
    assert_eq!(sum.ceil(), 1.0, "the HPA/KEDA query rounds once: one agent");
    assert_eq!(
        ha.recommended + hb.recommended,
        2,
        "rounded per replica: one too many"
    );
    // The same load through one proxy: the same demand, so the sum does not depend on how
    // the clients spread over the replicas.
    let (one, t0) = pool_of(4, config());
    one.tick(t0);
    for i in 0..450 {
        request(&agent(&one, i % 4), t0, MS, Outcome::Success);
    }
    let _held_one: Vec<InFlight> = (0..3).map(|i| agent(&one, i).start_at(t0)).collect();
    one.tick(t0 + S);
    assert!((one.hints().demand - sum).abs() < 1e-9, "{:?}", one.hints());
}

#[test]
fn hints_take_the_rate_when_it_needs_more_agents_and_stay_within_bounds() {
    let hints = HintsConfig {
        target_rpc_per_agent: Some(100.0),
        min_agents: 2,
        max_agents: 5,
        ..hints_config()
    };
    let (pool, t0) = pool_of(
        2,
        PoolConfig {
            hints,
            ..PoolConfig::default()
        },
    );
    pool.tick(t0);
    assert_eq!(pool.hints().recommended, 2, "min_agents");
    // 350 requests in one second: 350 RPC/s ÷ 100 = 4 agents, though none is outstanding.
    for i in 0..350 {
        request(&agent(&pool, i % 2), t0, MS, Outcome::Success);
    }
    pool.tick(t0 + S);
    let h = pool.hints();
    assert_eq!(
        (h.by_rate, h.by_outstanding, h.recommended),
        (Some(4), 0, 4),
        "{h:?}"
    );
    assert!((h.rpc_rate - 350.0).abs() < 1e-6);
    for i in 0..2_000 {
        request(&agent(&pool, i % 2), t0 + S, MS, Outcome::Success);
    }
    pool.tick(t0 + 2 * S);
    assert_eq!(pool.hints().recommended, 5, "max_agents");
    let json = serde_json::to_value(pool.hints()).unwrap();
    assert_eq!(json["recommended"], 5);
    assert_eq!(json["by_rate"], 20);
}

#[test]
fn smoothed_hints_rise_within_a_few_ticks() {
    let hints = HintsConfig {
        smoothing: Duration::from_secs(2),
        ..hints_config()
    };
    let (pool, t0) = pool_of(
        4,
        PoolConfig {
            hints,
            ..PoolConfig::default()
        },
    );
    pool.tick(t0);
    let _held: Vec<InFlight> = (0..40).map(|i| agent(&pool, i % 4).start_at(t0)).collect();
    let mut seen = Vec::new();
    for s in 1..=10 {
        pool.tick(t0 + s * S);
        seen.push(pool.hints().recommended);
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen[9], 4, "{seen:?}");
}

proptest! {
    #[test]
    fn the_two_candidates_are_distinct(n in 2usize..100_000, r: u64) {
        let (i, j) = two_distinct(n, r);
        prop_assert!(i < n && j < n && i != j);
    }

    #[test]
    fn picks_only_agents_that_take_new_work(
        states in proptest::collection::vec(0u8..4, 1..12),
        exclude in proptest::option::of(0usize..12),
    ) {
        // 0 ready, 1 terminating, 2 gone, 3 failing (ejected if the budget allows).
        let (pool, t0) = pool_of(states.len(), PoolConfig::default());
        for (i, s) in states.iter().enumerate() {
            match s {
                1 => pool.apply_at(Update::Upsert(ep(i).with_state(SourceState::Terminating)), t0),
                2 => pool.apply_at(Update::Remove(ep(i).id), t0),
                3 => (0..5).for_each(|_| request(&agent(&pool, i), t0, MS, Outcome::Timeout)),
                _ => {}
            }
        }
        let t = t0 + 10 * MS;
        let snap = pool.snapshot();
        let excluded = exclude.filter(|&x| x < states.len()).map(|x| agent(&pool, x));
        let allowed = |a: &Arc<Agent>| excluded.as_ref().is_none_or(|x| !Arc::ptr_eq(x, a));
        // Ready ones first; terminating ones only when no ready one can take it.
        let ready_left = snap.agents().iter().any(|a| a.state_at(t) == AgentState::Ready && allowed(a));
        let takes_work = |a: &Arc<Agent>| {
            allowed(a)
                && match a.state_at(t) {
                    AgentState::Ready => true,
                    AgentState::Terminating => !ready_left,
                    _ => false,
                }
        };
        let any = snap.agents().iter().any(takes_work);
        for _ in 0..50 {
            match snap.pick_at(t, excluded.as_deref()) {
                Some(a) => prop_assert!(takes_work(&a), "picked {} in state {:?}", a.id(), a.state_at(t)),
                None => prop_assert!(!any, "nothing picked though an agent takes work"),
            }
        }
    }
}

#[test]
fn concurrent_picks_and_membership_changes_keep_counts_exact() {
    let (pool, _) = pool_of(8, PoolConfig::default());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let snap = pool.snapshot();
                    let Some(a) = snap.pick() else { continue };
                    let req = a.start();
                    match i % 3 {
                        0 => req.finish(Outcome::Success),
                        1 => req.finish(Outcome::Failed),
                        _ => drop(req),
                    }
                }
            })
        })
        .collect();
    for round in 0..200 {
        let n = 2 + round % 7;
        pool.apply(Update::Reset((0..n).map(ep).collect()));
    }
    for t in threads {
        t.join().unwrap();
    }
    pool.apply(Update::Reset((0..8).map(ep).collect()));
    let snap = pool.snapshot();
    let stats: Vec<_> = snap.agents().iter().map(|a| a.stats()).collect();
    assert!(stats.iter().all(|s| s.outstanding == 0), "{stats:?}");
    let started: u64 = stats.iter().map(|s| s.started).sum();
    let ended: u64 = stats
        .iter()
        .map(|s| s.successes + s.failures + s.cancelled)
        .sum();
    assert_eq!(started, ended);
    assert!(started > 0);
}

#[test]
fn an_agent_joining_a_serving_pool_takes_its_share_at_once() {
    let (pool, t0) = pool_of(3, PoolConfig::default());
    // Five seconds of 300 µs answers: the estimates have come down from the 5 ms default.
    for i in 0..3 {
        for k in 0..500 {
            request(
                &agent(&pool, i),
                t0 + k * 10 * MS,
                300 * US,
                Outcome::Success,
            );
        }
    }
    let t = t0 + 5 * S;
    pool.apply_at(Update::Upsert(ep(3)), t);
    let new = agent(&pool, 3);
    assert!(
        new.latency_ewma_at(t) < MS,
        "starts at the pool's median, not 5 ms"
    );
    let counts = count_picks(&pool, t, 40_000);
    let share = counts[new.id()] as f64 / 40_000.0;
    assert!(
        (0.20..=0.30).contains(&share),
        "new agent's share {share} (fair: 0.25)"
    );
}
