//! Crate tests that drive the pool with explicit instants (the crate-internal `*_at` methods),
//! so backoffs, grace periods and hint windows are checked without waiting or flaking.
//!
//! Picking and membership are here; ejection and readmission in `health`, the autoscaling
//! hints in `hints`.

mod health;
mod hints;

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

pub(super) fn ep(i: usize) -> Endpoint {
    Endpoint::new(format!("10.0.0.{}:9999", i + 1).parse().unwrap())
}

/// A pool of `n` ready agents, and an instant after its epoch.
pub(super) fn pool_of(n: usize, config: PoolConfig) -> (Pool, Instant) {
    let pool = Pool::new(config);
    let t0 = Instant::now();
    pool.apply_at(Update::Reset((0..n).map(ep).collect()), t0);
    (pool, t0)
}

pub(super) fn agent(pool: &Pool, i: usize) -> Arc<Agent> {
    let id = ep(i).id;
    pool.snapshot()
        .agents()
        .iter()
        .find(|a| *a.id() == id)
        .unwrap()
        .clone()
}

pub(super) fn count_picks(pool: &Pool, now: Instant, picks: usize) -> HashMap<EndpointId, usize> {
    let snap = pool.snapshot();
    let mut counts = HashMap::new();
    for _ in 0..picks {
        let a = snap.pick_at(now, None).expect("an agent");
        *counts.entry(a.id().clone()).or_insert(0) += 1;
    }
    counts
}

/// One request on `a` from `at` taking `took`, ending with `outcome`.
pub(super) fn request(a: &Arc<Agent>, at: Instant, took: Duration, outcome: Outcome) {
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
fn a_joining_agent_takes_work_only_after_the_join_delay_but_is_found_by_token_at_once() {
    let (pool, t0) = pool_of(2, PoolConfig::default());
    assert!(
        (0..2).all(|i| agent(&pool, i).state_at(t0) == AgentState::Ready),
        "the first membership takes work at once"
    );
    pool.apply_at(Update::Upsert(ep(2)), t0 + S);
    let new = agent(&pool, 2);
    assert_eq!(new.state_at(t0 + S), AgentState::Joining);
    assert!(!count_picks(&pool, t0 + S, 2_000).contains_key(new.id()));
    let found = pool.snapshot().by_token_at(new.token(), t0 + S);
    assert!(found.is_some_and(|a| Arc::ptr_eq(&a, &new)));
    // Not before the delay is over...
    pool.tick(t0 + S + 499 * MS);
    assert!(!count_picks(&pool, t0 + S + 499 * MS, 2_000).contains_key(new.id()));
    // ...and a candidate like any other after it (its share: the test below).
    pool.tick(t0 + S + 500 * MS);
    assert_eq!(new.state_at(t0 + S + 500 * MS), AgentState::Ready);
    assert_eq!(pool.snapshot().ready_len_at(t0 + S + 500 * MS), 3);
}

#[test]
fn a_joining_agent_below_its_limit_takes_calls_when_every_ready_agent_is_at_its_limit() {
    // The overload queue's pick: a call that would wait, or be shed, goes to a new agent
    // whose join delay is not over (an orphaned update is possible, a shed call is certain).
    let config = PoolConfig {
        limit: crate::LimitConfig {
            initial: 1,
            min: 1,
            max: 1,
            ..crate::LimitConfig::default()
        },
        ..PoolConfig::default()
    };
    let (pool, _) = pool_of(1, config);
    pool.apply(Update::Upsert(ep(1)));
    let (ready, new) = (agent(&pool, 0), agent(&pool, 1));
    assert_eq!(new.state(), AgentState::Joining);
    let snap = pool.snapshot();
    assert!(Arc::ptr_eq(&snap.pick_free(None).unwrap(), &ready));
    let _busy = ready.start();
    assert!(Arc::ptr_eq(&snap.pick_free(None).unwrap(), &new));
    assert!(
        Arc::ptr_eq(&snap.pick().unwrap(), &ready),
        "without the limit, the ready agent"
    );
    let _also = new.start();
    assert!(snap.pick_free(None).is_none(), "both at their limits");
}

#[test]
fn joining_agents_take_work_when_no_other_agent_can() {
    // Scale from zero: better inspected by an agent another replica may not know yet than not
    // inspected at all.
    let (pool, t0) = pool_of(0, PoolConfig::default());
    pool.apply_at(Update::Upsert(ep(0)), t0);
    assert_eq!(agent(&pool, 0).state_at(t0), AgentState::Joining);
    assert_eq!(
        pool.snapshot().pick_at(t0, None).map(|a| a.id().clone()),
        Some(ep(0).id)
    );
    // A terminating agent goes first: a rollout's old agent still serves, and every replica
    // knows its RequestIDs.
    let (pool, t0) = pool_of(1, PoolConfig::default());
    pool.apply_at(Update::Upsert(ep(1)), t0);
    pool.apply_at(
        Update::Upsert(ep(0).with_state(SourceState::Terminating)),
        t0,
    );
    assert_eq!(count_picks(&pool, t0, 500).get(&ep(0).id), Some(&500));
    // A zero delay turns joining off.
    let config = PoolConfig {
        join_delay: Duration::ZERO,
        ..PoolConfig::default()
    };
    let (pool, t0) = pool_of(1, config);
    pool.apply_at(Update::Upsert(ep(1)), t0);
    assert_eq!(agent(&pool, 1).state_at(t0), AgentState::Ready);
}

#[tokio::test(start_paused = true)]
async fn the_running_pool_ends_the_join_delay_on_time() {
    let pool = Pool::new(PoolConfig::default());
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let updates = futures::StreamExt::boxed(rx);
    let runner = tokio::spawn({
        let pool = pool.clone();
        async move { pool.run(updates).await }
    });
    tx.unbounded_send(Update::Reset(vec![ep(0)])).unwrap();
    tokio::time::sleep(MS).await;
    tx.unbounded_send(Update::Upsert(ep(1))).unwrap();
    tokio::time::sleep(MS).await;
    let version = pool.snapshot().version();
    assert_eq!(pool.snapshot().ready_len(), 1, "joining");
    tokio::time::sleep(600 * MS).await;
    assert!(pool.snapshot().version() > version, "published again");
    assert_eq!(pool.snapshot().ready_len(), 2, "joined");
    runner.abort();
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
fn an_agent_joining_a_serving_pool_takes_its_share_as_soon_as_it_has_joined() {
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
    pool.tick(t + PoolConfig::default().join_delay);
    let new = agent(&pool, 3);
    assert!(
        new.latency_ewma_at(t) < MS,
        "starts at the pool's median, not 5 ms"
    );
    let joined = t + PoolConfig::default().join_delay;
    assert!(new.latency_ewma_at(joined) < MS, "at the median again");
    let counts = count_picks(&pool, joined, 40_000);
    let share = counts[new.id()] as f64 / 40_000.0;
    assert!(
        (0.20..=0.30).contains(&share),
        "new agent's share {share} (fair: 0.25)"
    );
}

#[test]
fn agents_sharing_a_short_token_leave_it_to_the_smaller_full_token() {
    // Found by a birthday search: FNV-1a 64 0xa1f2b3c4a851eb41 and 0x69495b3060ea03b5, both
    // folding to 0x09a35885.
    let (low, high) = ("agent-129406", "agent-18753");
    let pool = Pool::new(PoolConfig::default());
    let t0 = Instant::now();
    let with_id = |i: usize, id: &str| ep(i).with_id(EndpointId::new(id));
    pool.apply_at(
        Update::Reset(vec![with_id(0, high), with_id(1, low), ep(2)]),
        t0,
    );
    let snap = pool.snapshot();
    let find = |id: &str| {
        snap.agents()
            .iter()
            .find(|a| a.id().as_str() == id)
            .unwrap()
            .clone()
    };
    let (owner, other) = (find(low), find(high));
    assert_eq!(owner.token().short(), other.token().short());
    assert!(snap.owns_short_token(&owner));
    assert!(
        !snap.owns_short_token(&other),
        "its short IDs would name the owner"
    );
    let found = snap.by_short_token(other.token().short()).unwrap();
    assert!(Arc::ptr_eq(&found, &owner));
    // Full tokens still tell them apart.
    assert!(Arc::ptr_eq(&snap.by_token(other.token()).unwrap(), &other));
    let third = agent(&pool, 2);
    assert!(snap.owns_short_token(&third));
    assert!(Arc::ptr_eq(
        &snap.by_short_token(third.token().short()).unwrap(),
        &third
    ));
}
