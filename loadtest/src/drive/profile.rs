//! A load that changes over time: the offered rate as a piecewise-linear function of the time
//! into the drive, for the open-loop timetable. Autoscaling scenarios need it: a ramp, a step
//! and a daily wave are all the same drive at a rate that moves.

use std::time::Duration;

/// Transactions per second at given times into the drive, linear in between, the last value
/// held after the last point (and the first before the first).
#[derive(Debug, Clone, PartialEq)]
pub struct RateProfile {
    /// `(seconds into the drive, transactions per second)`, by time.
    points: Vec<(f64, f64)>,
}

/// The lowest rate a profile schedules at: a zero rate would never schedule the next
/// transaction.
pub const MIN_RATE: f64 = 1.0;

impl RateProfile {
    /// A profile through `points` (`(time, rate)`); they must be in time order, rates finite and
    /// not negative (rates under [`MIN_RATE`] are scheduled at it).
    pub fn new(points: Vec<(Duration, f64)>) -> anyhow::Result<RateProfile> {
        anyhow::ensure!(
            !points.is_empty(),
            "a rate profile needs at least one point"
        );
        let points: Vec<(f64, f64)> = points
            .into_iter()
            .map(|(t, r)| (t.as_secs_f64(), r))
            .collect();
        for w in points.windows(2) {
            anyhow::ensure!(w[0].0 <= w[1].0, "rate profile points out of time order");
        }
        for (_, r) in &points {
            anyhow::ensure!(r.is_finite() && *r >= 0.0, "rate {r} is not a rate");
        }
        Ok(RateProfile { points })
    }

    /// The same profile with every rate multiplied by `f` (a proxy's share of the load).
    pub fn scaled(&self, f: f64) -> RateProfile {
        RateProfile {
            points: self.points.iter().map(|&(t, r)| (t, r * f)).collect(),
        }
    }

    /// The rate at `t` seconds into the drive.
    pub fn rate_at(&self, t: f64) -> f64 {
        let p = &self.points;
        if t <= p[0].0 {
            return p[0].1;
        }
        for w in p.windows(2) {
            let ((t0, r0), (t1, r1)) = (w[0], w[1]);
            if t <= t1 {
                if t1 == t0 {
                    return r1;
                }
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0);
            }
        }
        p[p.len() - 1].1
    }

    /// The highest rate anywhere in the profile.
    pub fn peak(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// The points, `(seconds, rate)`.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The instant after one at `t` seconds: `1 / rate` later. Steps of one transaction are
    /// short against how fast the rate moves, so the rate at the step's start is exact enough.
    pub(crate) fn next_after(&self, t: f64) -> f64 {
        t + 1.0 / self.rate_at(t).max(MIN_RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn rates_interpolate_between_points_and_hold_outside() {
        let p = RateProfile::new(vec![(s(0), 100.0), (s(10), 200.0), (s(10), 800.0)]).unwrap();
        assert_eq!(p.rate_at(0.0), 100.0);
        assert_eq!(p.rate_at(5.0), 150.0);
        assert_eq!(
            p.rate_at(10.0),
            200.0,
            "the first of two points at one time"
        );
        assert_eq!(p.rate_at(10.5), 800.0, "then the step");
        assert_eq!(p.rate_at(99.0), 800.0);
        assert_eq!(p.peak(), 800.0);
        assert_eq!(p.scaled(0.25).rate_at(5.0), 37.5);
    }

    #[test]
    fn a_constant_profile_schedules_its_rate() {
        let p = RateProfile::new(vec![(s(0), 1000.0)]).unwrap();
        let mut t = 0.0;
        let mut n = 0;
        while t < 2.0 {
            t = p.next_after(t);
            n += 1;
        }
        assert!((1999..=2001).contains(&n), "{n}");
    }

    #[test]
    fn out_of_order_or_negative_points_are_refused() {
        assert!(RateProfile::new(vec![(s(2), 1.0), (s(1), 1.0)]).is_err());
        assert!(RateProfile::new(vec![(s(0), -1.0)]).is_err());
        assert!(RateProfile::new(vec![]).is_err());
    }
}
