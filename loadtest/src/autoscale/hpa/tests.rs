//! Worked examples of the HPA algorithm: the documentation's, and the manifest's own behaviour
//! replayed sync by sync (15 s apart, as the controller's default period).

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn demand_spec(min: u32, max: u32, up: Rules, down: Rules) -> Spec {
    Spec {
        min_replicas: min,
        max_replicas: max,
        metrics: vec![Metric::ExternalAverageValue {
            name: "demand".into(),
            target: 1.0,
        }],
        scale_up: up,
        scale_down: down,
    }
}

/// The shipped manifest's behaviour: up at once, at most doubling every 30 s; down after a
/// 300 s window, one pod a minute.
fn manifest_like(min: u32, max: u32) -> Spec {
    demand_spec(
        min,
        max,
        Rules {
            stabilization: Duration::ZERO,
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: secs(30),
            }],
        },
        Rules {
            stabilization: secs(300),
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Pods,
                value: 1,
                period: secs(60),
            }],
        },
    )
}

fn obs(replicas: u32, demand: f64) -> Observation {
    Observation {
        spec_replicas: replicas,
        status_replicas: replicas,
        external: vec![("demand".into(), demand)],
        pods: Vec::new(),
    }
}

/// Syncs every 15 s from `from` to `to` (inclusive) at a constant demand, applying each
/// decision; returns (time, replicas) after each sync.
fn replay(hpa: &mut Hpa, replicas: &mut u32, demand: f64, from: u64, to: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= to {
        *replicas = hpa.sync(secs(t), &obs(*replicas, demand)).desired;
        out.push((t, *replicas));
        t += 15;
    }
    out
}

#[test]
fn external_average_value_moves_only_outside_the_tolerance() {
    // 4 pods, target 1 per pod: 4.3 is 7.5 % over (within 10 %), 4.5 is 12.5 % over.
    assert_eq!(external_average_value(4.3, 1.0, 4, TOLERANCE), 4);
    assert_eq!(external_average_value(4.5, 1.0, 4, TOLERANCE), 5);
    assert_eq!(external_average_value(3.7, 1.0, 4, TOLERANCE), 4);
    assert_eq!(
        external_average_value(3.5, 1.0, 4, TOLERANCE),
        4,
        "ceil(3.5) is 4"
    );
    assert_eq!(external_average_value(3.0, 1.0, 4, TOLERANCE), 3);
    // Against the pods that exist, not the ones asked for: 10 exist, 6 wanted.
    assert_eq!(external_average_value(6.0, 1.0, 10, TOLERANCE), 6);
    // A target of 500m: 3 units of demand need 6 pods.
    assert_eq!(external_average_value(3.0, 0.5, 2, TOLERANCE), 6);
}

#[test]
fn cpu_follows_the_documented_example_and_ignores_unready_pods() {
    // The documentation's example: 50 replicas at 90 % against a 75 % target → 60.
    let pods = vec![
        Pod {
            ready: true,
            cpu: Some(0.9)
        };
        50
    ];
    assert_eq!(resource_utilization(&pods, 0.75, 50, TOLERANCE), Some(60));
    // Within the tolerance: 80 % against 75 % (ratio 1.067) changes nothing.
    let pods = vec![
        Pod {
            ready: true,
            cpu: Some(0.8)
        };
        10
    ];
    assert_eq!(resource_utilization(&pods, 0.75, 10, TOLERANCE), Some(10));
    // 3 ready pods saturated, 2 starting: the ratio (1/0.7) says up, but with the starting pods
    // at 0 % it is 0.86, the other way: no change (the controller's dampening).
    let mut pods = vec![
        Pod {
            ready: true,
            cpu: Some(1.0)
        };
        3
    ];
    pods.extend(
        [Pod {
            ready: false,
            cpu: None,
        }; 2],
    );
    assert_eq!(resource_utilization(&pods, 0.7, 5, TOLERANCE), Some(5));
    // Only one starting pod: 3 at 100 % + 1 at 0 % is 1.07 of 70 %... within 10 %: no change.
    pods.pop();
    assert_eq!(resource_utilization(&pods, 0.7, 4, TOLERANCE), Some(4));
    // All 3 saturated, none starting: ceil(3 × 1/0.7) = 5.
    pods.pop();
    assert_eq!(resource_utilization(&pods, 0.7, 3, TOLERANCE), Some(5));
    // A saturated pool cannot ask for more than 1/target of itself per sync.
    let pods = vec![
        Pod {
            ready: true,
            cpu: Some(1.0)
        };
        2
    ];
    assert_eq!(resource_utilization(&pods, 0.7, 2, TOLERANCE), Some(3));
    assert_eq!(resource_utilization(&[], 0.7, 2, TOLERANCE), None);
}

#[test]
fn scale_up_is_limited_to_doubling_per_30_s() {
    // 2 → 10 wanted at once: 4 at 0 s; still 4 at 15 s (2 were added within the period);
    // 8 at 30 s (the event at 0 s is no longer within (0, 30]); 10 at 60 s.
    let mut hpa = Hpa::new(manifest_like(2, 20));
    let mut n = 2;
    let got = replay(&mut hpa, &mut n, 10.0, 0, 60);
    assert_eq!(got, vec![(0, 4), (15, 4), (30, 8), (45, 8), (60, 10)]);
}

#[test]
fn max_replicas_caps_the_scale_up() {
    let mut hpa = Hpa::new(manifest_like(2, 20));
    let mut n = 16;
    assert_eq!(replay(&mut hpa, &mut n, 35.0, 0, 0), vec![(0, 20)]);
    // Above max (someone scaled by hand): back to max at once.
    let mut n = 25;
    assert_eq!(replay(&mut hpa, &mut n, 35.0, 15, 15), vec![(15, 20)]);
}

#[test]
fn scale_down_waits_the_window_then_one_pod_a_minute() {
    // Demand 6 at 0 s, then 2 from 15 s on. The 300 s window holds 6 while the proposal of
    // 0 s is within it, (t − 300, t]: until 300 s. Then the policy removes one pod per 60 s: 5
    // at 300, 4 at 360, 3 at 420, 2 at 480, never below minReplicas.
    let mut hpa = Hpa::new(manifest_like(2, 20));
    let mut n = 6;
    assert_eq!(replay(&mut hpa, &mut n, 6.0, 0, 0), vec![(0, 6)]);
    let got = replay(&mut hpa, &mut n, 2.0, 15, 525);
    let changes: Vec<(u64, u32)> = got
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| w[1])
        .collect();
    assert_eq!(got[0], (15, 6));
    assert_eq!(changes, vec![(300, 5), (360, 4), (420, 3), (480, 2)]);
    assert_eq!(n, 2);
}

#[test]
fn a_short_dip_inside_the_window_does_not_scale_down() {
    // 6 → demand 3 for 60 s → 6 again: the window keeps 6 the whole time, no change at all.
    let mut hpa = Hpa::new(manifest_like(2, 20));
    let mut n = 6;
    let mut all = replay(&mut hpa, &mut n, 6.0, 0, 0);
    all.extend(replay(&mut hpa, &mut n, 3.0, 15, 75));
    all.extend(replay(&mut hpa, &mut n, 6.0, 90, 600));
    assert!(all.iter().all(|&(_, r)| r == 6), "{all:?}");
}

#[test]
fn a_scale_up_window_takes_the_lowest_recent_proposal() {
    let mut spec = manifest_like(1, 20);
    spec.scale_up.stabilization = secs(60);
    let mut hpa = Hpa::new(spec);
    let mut n = 2;
    // 2 held, then 8 from 15 s: the window's lowest proposal is 2 until 60 s have passed
    // since the last proposal of 2 (at 0 s): up at 60, to 4 (the doubling policy), 8 at 90.
    let mut got = replay(&mut hpa, &mut n, 2.0, 0, 0);
    got.extend(replay(&mut hpa, &mut n, 8.0, 15, 90));
    assert_eq!(
        got,
        vec![(0, 2), (15, 2), (30, 2), (45, 2), (60, 4), (75, 4), (90, 8)]
    );
}

#[test]
fn select_policy_min_picks_the_smaller_step_and_disabled_none() {
    let up = |select| Rules {
        stabilization: Duration::ZERO,
        select,
        policies: vec![
            Policy {
                kind: PolicyKind::Pods,
                value: 4,
                period: secs(15),
            },
            Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: secs(15),
            },
        ],
    };
    let down = Rules::default_scale_down();
    // From 10: Pods allows 14, Percent 20.
    for (select, want) in [(Select::Max, 20), (Select::Min, 14), (Select::Disabled, 10)] {
        let mut hpa = Hpa::new(demand_spec(1, 100, up(select), down.clone()));
        let d = hpa.sync(secs(0), &obs(10, 30.0));
        assert_eq!(d.desired, want, "{select:?}");
        assert_eq!(d.metric_desired, Some(30));
    }
}

#[test]
fn the_default_scale_down_percent_rounds_down_and_respects_min() {
    let spec = demand_spec(
        3,
        100,
        Rules::default_scale_up(),
        Rules {
            stabilization: Duration::ZERO,
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 50,
                period: secs(15),
            }],
        },
    );
    let mut hpa = Hpa::new(spec);
    // 9 → 1 wanted: 50 % of 9 is 4.5, the limit int(4.5) = 4; then min 3.
    assert_eq!(hpa.sync(secs(0), &obs(9, 1.0)).desired, 4);
    assert_eq!(hpa.sync(secs(15), &obs(4, 1.0)).desired, 3);
}

#[test]
fn the_larger_metric_wins_and_an_unreadable_one_proposes_nothing() {
    let mut spec = manifest_like(2, 20);
    spec.metrics.push(Metric::CpuUtilization { target: 0.7 });
    let mut hpa = Hpa::new(spec);
    let mut o = obs(4, 3.0);
    o.pods = vec![
        Pod {
            ready: true,
            cpu: Some(1.0)
        };
        4
    ];
    // Demand says 3 (within the window: stays 4 anyway); CPU says ceil(4/0.7) = 6.
    let d = hpa.sync(secs(0), &o);
    assert_eq!(d.proposals, vec![Some(3), Some(6)]);
    assert_eq!(d.desired, 6);
    // Demand unreadable, CPU idle pods: CPU alone decides (and the window holds 6).
    let mut o = obs(6, 0.0);
    o.external.clear();
    o.pods = vec![
        Pod {
            ready: true,
            cpu: Some(0.1)
        };
        6
    ];
    let d = hpa.sync(secs(15), &o);
    assert_eq!(d.proposals, vec![None, Some(1)]);
    assert_eq!(d.desired, 6);
}

#[test]
fn time_scaling_scales_every_window_alike() {
    let spec = manifest_like(2, 20).time_scaled(0.1);
    assert_eq!(spec.scale_down.stabilization, secs(30));
    assert_eq!(spec.scale_down.policies[0].period, secs(6));
    assert_eq!(spec.scale_up.policies[0].period, secs(3));
    // The scale-down example at a tenth of the time: the same changes at a tenth of the times.
    let mut hpa = Hpa::new(spec);
    let mut n = 6;
    let mut t = Duration::ZERO;
    let mut changes = Vec::new();
    while t <= Duration::from_millis(52_500) {
        let demand = if t.is_zero() { 6.0 } else { 2.0 };
        let d = hpa.sync(t, &obs(n, demand)).desired;
        if d != n {
            changes.push((t.as_millis(), d));
        }
        n = d;
        t += Duration::from_millis(1500);
    }
    assert_eq!(
        changes,
        vec![(30_000, 5), (36_000, 4), (42_000, 3), (48_000, 2)]
    );
}
