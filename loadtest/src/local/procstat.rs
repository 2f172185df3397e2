//! What a child process costs, read from Linux's `/proc/<pid>`: CPU time (user + system), resident
//! memory and open file descriptors. Used by the soak scenario (RSS and fds flat after warm-up),
//! the ramp (the proxy's CPU when calls start to fail) and `loadtest bench` (CPU µs per RPC).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scenario::Expect;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`: 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU time since the process started.
    pub cpu: Duration,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Reads `pid`; `None` once it is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Some(Sample {
        cpu: Duration::from_secs_f64(ticks as f64 / TICKS_PER_S),
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
        fds,
    })
}

/// The median of `v` (0 when empty).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Process ids by front replica, kept current across restarts.
pub type Pids = Arc<Mutex<Vec<Option<u32>>>>;

/// Samples taken during a run: (time since sampling started, replica, pid, sample).
pub type Samples = Arc<Mutex<Vec<(Duration, usize, u32, Sample)>>>;

/// Samples every front in `pids` each `every` into `samples` until aborted.
pub fn sample_every(pids: Pids, every: Duration, samples: Samples) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let t0 = std::time::Instant::now();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now: Vec<Option<u32>> = pids.lock().expect("not poisoned").clone();
            for (i, pid) in now.into_iter().enumerate() {
                if let Some(pid) = pid
                    && let Some(s) = sample(pid)
                {
                    samples
                        .lock()
                        .expect("not poisoned")
                        .push((t0.elapsed(), i, pid, s));
                }
            }
        }
    })
}

/// What the fronts spent on the run's RPCs: the CPU time every front process used between its
/// first and last sample (a restarted replica counts each of its processes), per RPC answered.
/// The line `loadtest local` logs for every run (on the bed: the node-local topologies'
/// proxy CPU per RPC over TCP and over the Unix socket).
pub fn cpu_per_rpc(samples: &[(Duration, usize, u32, Sample)], rpcs: u64) -> Option<String> {
    let (cpu, processes) = front_cpu(samples)?;
    if rpcs == 0 {
        return None;
    }
    Some(format!(
        "fronts' CPU: {:.2} s for {rpcs} RPCs answered, {:.1} µs per RPC ({} process(es), sampled every 250 ms)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / rpcs as f64,
        processes
    ))
}

/// The CPU the sampled processes spent between their first and last samples, and how many
/// processes there were; `None` without samples.
pub fn front_cpu(samples: &[(Duration, usize, u32, Sample)]) -> Option<(Duration, usize)> {
    let mut spans: std::collections::BTreeMap<u32, (Duration, Duration)> = Default::default();
    for (_, _, pid, s) in samples {
        let e = spans.entry(*pid).or_insert((s.cpu, s.cpu));
        e.0 = e.0.min(s.cpu);
        e.1 = e.1.max(s.cpu);
    }
    if spans.is_empty() {
        return None;
    }
    Some((spans.values().map(|(lo, hi)| *hi - *lo).sum(), spans.len()))
}

/// RSS and fd growth of every front process that lived through the whole run: the median of
/// the last quarter's samples minus the median of the quarter after `warmup` (default a quarter
/// of `duration`). Judged against `max_rss_growth_kib` / `max_fd_growth` when set; returns the
/// lines to log.
pub fn judge_growth(
    samples: &[(Duration, usize, u32, Sample)],
    duration: Duration,
    e: &Expect,
    failures: &mut Vec<String>,
) -> Vec<String> {
    if e.max_rss_growth_kib.is_none() && e.max_fd_growth.is_none() {
        return Vec::new();
    }
    let warmup = e.warmup.unwrap_or(duration / 4);
    let mut lines = Vec::new();
    let replicas = samples.iter().map(|s| s.1).max().map_or(0, |m| m + 1);
    for i in 0..replicas {
        let mine: Vec<_> = samples.iter().filter(|s| s.1 == i).collect();
        let pids: std::collections::BTreeSet<u32> = mine.iter().map(|s| s.2).collect();
        if pids.len() != 1 {
            lines.push(format!(
                "front {i}: {} processes during the run (restarted): growth not judged",
                pids.len()
            ));
            continue;
        }
        let early_end = warmup + (duration.saturating_sub(warmup)) / 4;
        let late_start = duration - duration / 4;
        let window = |lo: Duration, hi: Duration, f: fn(&Sample) -> f64| {
            let mut v: Vec<f64> = mine
                .iter()
                .filter(|s| s.0 >= lo && s.0 < hi)
                .map(|s| f(&s.3))
                .collect();
            (!v.is_empty()).then(|| median(&mut v))
        };
        let rss = |s: &Sample| s.rss_kib as f64;
        let fds = |s: &Sample| s.fds as f64;
        let (Some(r0), Some(r1), Some(f0), Some(f1)) = (
            window(warmup, early_end, rss),
            window(late_start, duration + Duration::from_secs(1), rss),
            window(warmup, early_end, fds),
            window(late_start, duration + Duration::from_secs(1), fds),
        ) else {
            failures.push(format!("front {i}: too few samples to judge growth"));
            continue;
        };
        let peak = mine.iter().map(|s| s.3.peak_rss_kib).max().unwrap_or(0);
        let (dr, df) = (r1 - r0, f1 - f0);
        lines.push(format!(
            "front {i} (pid {}): RSS {r0:.0} -> {r1:.0} KiB ({dr:+.0}), fds {f0:.0} -> {f1:.0} ({df:+.0}), peak RSS {peak} KiB; {} samples, warm-up {warmup:?}",
            pids.first().expect("one"),
            mine.len()
        ));
        if let Some(max) = e.max_rss_growth_kib
            && dr > max as f64
        {
            failures.push(format!(
                "front {i}: RSS grew {dr:.0} KiB after warm-up (at most {max})"
            ));
        }
        if let Some(max) = e.max_fd_growth
            && df > max as f64
        {
            failures.push(format!(
                "front {i}: open fds grew {df:.0} after warm-up (at most {max})"
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_rpc_sums_each_process_from_its_first_to_its_last_sample() {
        let at = |cpu_ms: u64| Sample {
            cpu: Duration::from_millis(cpu_ms),
            ..Sample::default()
        };
        let t = Duration::ZERO;
        // Replica 0 restarted: pid 10 used 300 ms, pid 11 used 100 ms; replica 1 used 600 ms.
        let samples = [
            (t, 0, 10, at(1000)),
            (t, 0, 10, at(1300)),
            (t, 0, 11, at(50)),
            (t, 0, 11, at(150)),
            (t, 1, 12, at(200)),
            (t, 1, 12, at(800)),
        ];
        let line = cpu_per_rpc(&samples, 1000).expect("a line");
        assert!(line.contains("1.00 s for 1000 RPCs"), "{line}");
        assert!(line.contains("1000.0 µs per RPC (3 process(es)"), "{line}");
        assert_eq!(cpu_per_rpc(&samples, 0), None);
        assert_eq!(cpu_per_rpc(&[], 10), None);
    }

    #[test]
    fn this_process_has_cpu_memory_and_descriptors() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib && s.fds >= 3);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
