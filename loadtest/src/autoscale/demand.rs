//! Whether the autoscaler is told enough while the proxies shed: every half second the runner
//! reads each proxy's `sigsci_proxy_agent_demand` (summed, unrounded) and its shed calls
//! (`sigsci_proxy_queue_shed_total`, every cause), and [`while_shedding`] compares the demand
//! of each interval in which some call was shed with the load offered at its end, in agents'
//! worth (offered RPC/s ÷ the per-agent target). A ratio below 1 means the HPA was asked for
//! fewer agents than the load needs at the very moment calls were being dropped, whether
//! because the demand omits shed calls or because its smoothing still lags the rise.

use serde::Serialize;

/// The proxies' demand and shed calls at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DemandSample {
    /// Seconds into the drive.
    pub t: f64,
    /// `sum(sigsci_proxy_agent_demand)` over every proxy, unrounded; `None` if a proxy could
    /// not be read.
    pub demand: Option<f64>,
    /// Calls shed so far, summed over the proxies (a proxy not read counts as unchanged).
    pub shed: u64,
    /// Load offered at `t`, agents' worth.
    pub offered: f64,
}

/// Summed demand ÷ offered agents' worth over the intervals in which calls were shed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShedDemand {
    /// Intervals with a shed call and a demand read.
    pub intervals: usize,
    /// Their lowest ratio.
    pub min: Option<f64>,
    /// Their 10th percentile (nearest rank).
    pub p10: Option<f64>,
    /// Their median (nearest rank).
    pub p50: Option<f64>,
    /// Of them, the ones whose ratio was below 1.
    pub below_one: usize,
}

/// The ratio for every interval, ending at `samples[i]`, in which the shed count rose.
pub fn while_shedding(samples: &[DemandSample]) -> ShedDemand {
    let mut ratios: Vec<f64> = samples
        .windows(2)
        .filter(|w| w[1].shed > w[0].shed && w[1].offered > 0.0)
        .filter_map(|w| w[1].demand.map(|d| d / w[1].offered))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let rank = |q: f64| -> Option<f64> {
        let i = ((q * ratios.len() as f64).ceil() as usize).max(1);
        ratios.get(i - 1).copied()
    };
    ShedDemand {
        intervals: ratios.len(),
        min: ratios.first().copied(),
        p10: rank(0.1),
        p50: rank(0.5),
        below_one: ratios.iter().filter(|&&r| r < 1.0).count(),
    }
}

/// The sum of every series `name{...}` in a Prometheus text exposition (0 if there is none).
pub(crate) fn labelled_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (_, v) = rest.split_once("} ")?;
            v.trim().parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, demand: Option<f64>, shed: u64, offered: f64) -> DemandSample {
        DemandSample {
            t,
            demand,
            shed,
            offered,
        }
    }

    #[test]
    fn only_intervals_with_shed_calls_count_against_the_load_at_their_end() {
        let samples = [
            s(0.0, Some(1.5), 0, 1.5),
            // Demand far below the load, but nothing shed: not counted.
            s(0.5, Some(1.5), 0, 6.0),
            // Shedding while the demand lags: 3 of 6.
            s(1.0, Some(3.0), 40, 6.0),
            // Shedding, demand caught up with the shed calls: 9 of 6.
            s(1.5, Some(9.0), 90, 6.0),
            // No new shed calls.
            s(2.0, Some(6.0), 90, 6.0),
            // Shed, but the demand could not be read: not counted.
            s(2.5, None, 95, 6.0),
            s(3.0, Some(7.2), 99, 6.0),
        ];
        let r = while_shedding(&samples);
        assert_eq!(r.intervals, 3);
        assert_eq!(r.min, Some(0.5));
        assert_eq!(r.p10, Some(0.5));
        assert_eq!(r.p50, Some(1.2));
        assert_eq!(r.below_one, 1);
    }

    #[test]
    fn a_run_without_shedding_has_no_ratio() {
        let samples = [s(0.0, Some(1.0), 3, 1.0), s(0.5, Some(0.2), 3, 6.0)];
        assert_eq!(while_shedding(&samples), ShedDemand::default());
    }

    #[test]
    fn the_tenth_percentile_skips_the_lowest_of_many() {
        let mut samples = vec![s(0.0, Some(1.0), 0, 1.0)];
        for i in 1..=20u32 {
            let demand = if i == 1 {
                0.2
            } else {
                1.0 + f64::from(i) / 100.0
            };
            samples.push(s(f64::from(i), Some(demand), u64::from(i), 1.0));
        }
        let r = while_shedding(&samples);
        assert_eq!(r.intervals, 20);
        assert_eq!(r.min, Some(0.2));
        assert_eq!(r.p10, Some(1.02));
        assert_eq!(r.below_one, 1);
    }

    #[test]
    fn shed_calls_are_summed_over_their_causes() {
        let text = "# TYPE sigsci_proxy_queue_shed_total counter\n\
                    sigsci_proxy_queue_shed_total{cause=\"full\"} 12\n\
                    sigsci_proxy_queue_shed_total{cause=\"expired\"} 3\n\
                    sigsci_proxy_queue_shed_total_other{cause=\"full\"} 100\n";
        assert_eq!(labelled_sum(text, "sigsci_proxy_queue_shed_total"), 15.0);
        assert_eq!(labelled_sum("", "sigsci_proxy_queue_shed_total"), 0.0);
    }
}
