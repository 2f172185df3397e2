//! The autoscaling hints: raw per-replica demand, the smoothed recommendation and its bounds.

use super::*;

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
    let (pool, t0) = hinted_pool(2, hints);
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

/// `n` agents whose pool computes hints with `hints`; ticked once at the returned instant.
fn hinted_pool(n: usize, hints: HintsConfig) -> (Pool, Instant) {
    let (pool, t0) = pool_of(
        n,
        PoolConfig {
            hints,
            ..PoolConfig::default()
        },
    );
    pool.tick(t0);
    (pool, t0)
}

/// `n` agents, a demand of one agent per 100 RPC/s, the rate smoothed over `smoothing`.
fn rate_pool(n: usize, smoothing: Duration) -> (Pool, Instant) {
    hinted_pool(
        n,
        HintsConfig {
            smoothing,
            target_rpc_per_agent: Some(100.0),
            ..hints_config()
        },
    )
}

#[test]
fn the_rate_demand_rises_in_one_tick_and_falls_smoothly() {
    let (pool, t0) = rate_pool(2, Duration::from_secs(10));
    for i in 0..500 {
        agent(&pool, i % 2).start_at(t0).finish(Outcome::Success);
    }
    pool.tick(t0 + S);
    let risen = pool.hints().demand;
    assert!(
        (4.99..=5.01).contains(&risen),
        "500 calls/s at 100 per agent: {risen}"
    );
    pool.tick(t0 + 2 * S);
    let fallen = pool.hints().demand;
    assert!(fallen < risen && fallen > 4.0, "{risen} -> {fallen}");
}

#[test]
fn a_shed_pre_request_counts_the_follow_ups_an_inspected_one_brings() {
    let (pool, t0) = rate_pool(1, Duration::ZERO);
    // One UpdateRequest or PostRequest for every five PreRequests answered.
    for i in 0..10 {
        pool.count_pre_answered();
        if i % 5 == 0 {
            pool.count_follow_up();
        }
    }
    for _ in 0..100 {
        pool.count_shed(true);
    }
    pool.count_shed(false);
    pool.tick(t0 + S);
    let demand = pool.hints().demand;
    assert!(
        (1.20..=1.22).contains(&demand),
        "121 calls/s at 100 per agent: {demand}"
    );
}
