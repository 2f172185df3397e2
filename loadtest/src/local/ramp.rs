//! The `[ramp]` of a scenario: drives at rising rates until the first failed call, each rate's
//! outcome logged with what every process spent (the front's and this process's CPU, read from
//! `/proc`), so the saturation point comes with its likely cause.

use std::sync::{Arc, Mutex};

use super::procstat::{self, Pids};
use crate::drive::{DriveArgs, DriveReport};
use crate::scenario::Ramp;

/// CPU share of one core used by `pid` between two samples over `secs`.
fn cpu_share(a: Option<procstat::Sample>, b: Option<procstat::Sample>, secs: f64) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => (b.cpu.saturating_sub(a.cpu)).as_secs_f64() / secs,
        _ => f64::NAN,
    }
}

/// Runs the ramp; returns the report of the first rate with a failed call or overflow (or of
/// the last rate tried), and logs one line per rate and a verdict.
pub(crate) async fn run(
    r: &Ramp,
    base: &DriveArgs,
    pids: &Pids,
    log: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<DriveReport> {
    let front = pids
        .lock()
        .expect("not poisoned")
        .first()
        .copied()
        .flatten();
    let me = std::process::id();
    let mut rate = r.start;
    let mut last_clean: Option<f64> = None;
    loop {
        let d = DriveArgs {
            rate,
            duration: r.step_duration,
            no_progress: true,
            ..base.clone()
        };
        let (f0, m0) = (front.and_then(procstat::sample), procstat::sample(me));
        let t0 = std::time::Instant::now();
        let report = crate::drive::run(d).await?;
        let secs = t0.elapsed().as_secs_f64();
        let (f1, m1) = (front.and_then(procstat::sample), procstat::sample(me));
        let pre = report.tally.methods.get(crate::rpc::PRE_REQUEST);
        let (front_cpu, my_cpu) = (cpu_share(f0, f1, secs), cpu_share(m0, m1, secs));
        let failed = report.total_errors() > 0 || report.overflow > 0;
        let kinds: Vec<String> = report
            .tally
            .errors
            .iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect();
        let line = format!(
            "ramp {rate:.0} tx/s: achieved {:.0}, errors {} [{}], overflow {}, PreRequest p50 {} µs p99 {} µs, front CPU {:.0}% of a core, loadtest CPU {:.0}%",
            report.achieved_rate,
            report.total_errors(),
            kinds.join(", "),
            report.overflow,
            pre.map_or(0, |m| m.latency_us.p50),
            pre.map_or(0, |m| m.latency_us.p99),
            100.0 * front_cpu,
            100.0 * my_cpu,
        );
        eprintln!("loadtest local: {line}");
        log.lock().expect("not poisoned").push(line);
        let next = rate * r.factor;
        if failed || next > r.max_rate {
            let verdict = if failed {
                let cause = if report.overflow > 0 {
                    "transactions could not start: the load generator's in-flight bound (calls too slow)"
                } else if front_cpu >= 0.9 {
                    "the front used a whole core (its one worker thread is saturated)"
                } else if my_cpu >= 0.9 {
                    "the load generator used a whole core (the machine, not the front, is the limit)"
                } else {
                    "calls failed with CPU to spare: see the error kinds (deadline = queueing on this 2-core machine)"
                };
                format!(
                    "saturation: last rate without a failed call {}; first failures at {rate:.0} tx/s; likely cause: {cause}",
                    last_clean.map_or("none".into(), |c| format!("{c:.0} tx/s"))
                )
            } else {
                format!(
                    "no failed call up to {rate:.0} tx/s (max_rate {})",
                    r.max_rate
                )
            };
            eprintln!("loadtest local: {verdict}");
            log.lock().expect("not poisoned").push(verdict);
            return Ok(report);
        }
        last_clean = Some(rate);
        rate = next;
    }
}
