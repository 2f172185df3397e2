//! Passive health: which failures eject an agent, for how long, how it comes back, and the
//! bound on how much of the pool may be out at once.

use super::*;

/// `n` timeouts on `a` at `at`, each after a call `peer` answered in time: the timeouts are
/// `a`'s doing, not shared by the pool.
fn timeouts_while_peer_answers(a: &Arc<Agent>, peer: &Arc<Agent>, at: Instant, n: usize) {
    for _ in 0..n {
        request(peer, at, MS, Outcome::Success);
        request(a, at, MS, Outcome::Timeout);
    }
}

#[test]
fn timeouts_on_every_agent_at_once_eject_none_timeouts_on_one_alone_do() {
    let (pool, t0) = pool_of(3, PoolConfig::default());
    let agents: Vec<_> = (0..3).map(|i| agent(&pool, i)).collect();
    let mut t = t0;
    // Every agent slow at once (the proxy's own CPU saturated): ten timeouts each, interleaved.
    for _ in 0..10 {
        for a in &agents {
            request(a, t, 80 * MS, Outcome::Timeout);
        }
        t += MS;
    }
    for a in &agents {
        assert_eq!(a.state_at(t), AgentState::Ready, "{}", a.id());
        assert_eq!(a.stats().ejections, 0);
    }
    // All answer again; then one times out while the others answer in time: that is its own.
    for a in &agents {
        request(a, t, MS, Outcome::Success);
    }
    for _ in 0..5 {
        request(&agents[1], t, MS, Outcome::Success);
        request(&agents[2], t, MS, Outcome::Success);
        request(&agents[0], t, 80 * MS, Outcome::Timeout);
        t += MS;
    }
    assert_eq!(agents[0].state_at(t), AgentState::Ejected);
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
    let (a, peer) = (agent(&pool, 0), agent(&pool, 1));
    timeouts_while_peer_answers(&a, &peer, t0, 5);
    assert_eq!(a.state_at(t0 + MS), AgentState::Ejected);
    // The sweep (or a pick) ends the ejection after 1 s: one failure re-ejects, for 2 s.
    pool.tick(t0 + S + MS);
    assert_eq!(a.state_at(t0 + S + MS), AgentState::Ready);
    timeouts_while_peer_answers(&a, &peer, t0 + S + MS, 1);
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
    timeouts_while_peer_answers(&b, &agent(&pool, 3), now, 5);
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
fn an_agent_back_from_unreachable_starts_cheaper_than_the_agents_that_carried_its_load() {
    let (pool, t0) = pool_of(3, PoolConfig::default());
    let a = agent(&pool, 0);
    for _ in 0..5 {
        request(&a, t0, MS, Outcome::ConnectFailure);
    }
    assert!(!a.probed(false, None), "still unreachable");
    // The others' estimate while they carried its load.
    let typical = 3 * MS;
    assert!(a.probed(true, Some(typical)));
    let fresh = a.latency_ewma();
    // Cheaper than them by more than the picker's tie margin (1.25): P2C takes it at once.
    assert!(
        fresh.as_secs_f64() * 1.25 < typical.as_secs_f64(),
        "{fresh:?}: at the others' estimate the picker would try it slowly; below it, at once"
    );
    // Its first answer lifts the estimate to that answer's latency at least.
    request(&a, Instant::now(), 4 * MS, Outcome::Success);
    assert!(
        a.latency_ewma() >= 4 * MS - MS / 10,
        "{:?}",
        a.latency_ewma()
    );
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
