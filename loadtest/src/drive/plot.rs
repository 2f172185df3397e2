//! An SVG of a drive's timeline: PreRequest latency (mean and max per 100 ms bucket, log
//! scale) and failed calls, with the scenario's marks as vertical lines. No dependency: the
//! SVG is written by hand.

use std::fmt::Write as _;

use super::report::{BUCKET, Bucket};

use crate::svg::{self, Axes};

const W: f64 = 900.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 30.0;
const PLOT_W: f64 = W - LEFT - 20.0;
const PLOT_H: f64 = H - TOP - 50.0;
/// Latency axis: log10 of microseconds, from 100 µs to 100 ms.
const LOG_US: (f64, f64) = (2.0, 5.0);

/// Renders `timeline` with `marks` (label, seconds into the drive) and a `title`.
pub fn svg(title: &str, timeline: &[Bucket], marks: &[(String, f64)]) -> String {
    let axes = Axes {
        left: LEFT,
        top: TOP,
        width: PLOT_W,
        height: PLOT_H,
        secs: timeline.len().max(1) as f64 * BUCKET.as_secs_f64(),
    };
    let mut o = String::new();
    svg::open(&mut o, W, H, LEFT, title);
    for (us, label) in [
        (100.0, "100µs"),
        (1e3, "1ms"),
        (1e4, "10ms"),
        (1e5, "100ms"),
    ] {
        axes.grid_line(&mut o, y(us), label);
    }
    axes.time_labels(&mut o, if axes.secs > 20.0 { 5.0 } else { 1.0 });
    latency_lines(&mut o, &axes, timeline);
    let max_err = error_bars(&mut o, &axes, timeline);
    for (label, at) in marks {
        let xx = axes.x(*at);
        let _ = write!(
            o,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}" stroke="#6a4c93" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#6a4c93">{}</text>"##,
            axes.bottom(),
            xx + 3.0,
            TOP + 12.0,
            svg::escape(label)
        );
    }
    let _ = write!(
        o,
        r##"<text x="{LEFT}" y="{:.1}"><tspan fill="#264653">— PreRequest mean</tspan>  <tspan fill="#f4a261">— max</tspan>  <tspan fill="#e63946">▮ failed calls (max {max_err:.0} per 100 ms)</tspan></text></svg>"##,
        H - 8.0
    );
    o.push('\n');
    o
}

/// Where `us` microseconds fall on the log latency axis.
fn y(us: f64) -> f64 {
    let (lo, hi) = LOG_US;
    let v = us.max(1.0).log10().clamp(lo, hi);
    TOP + PLOT_H * (1.0 - (v - lo) / (hi - lo))
}

/// PreRequest latency per bucket: the mean and the max.
fn latency_lines(o: &mut String, axes: &Axes, timeline: &[Bucket]) {
    let series = |f: &dyn Fn(&Bucket) -> Option<f64>| {
        timeline
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                f(b).map(|v| {
                    format!(
                        "{:.1},{:.1}",
                        axes.x((i as f64 + 0.5) * BUCKET.as_secs_f64()),
                        y(v)
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mean = series(&|b| {
        (b.prerequests > 0).then(|| b.pre_latency_sum_us as f64 / b.prerequests as f64)
    });
    let max = series(&|b| (b.prerequests > 0).then_some(b.pre_latency_max_us as f64));
    let _ = write!(
        o,
        r##"<polyline fill="none" stroke="#f4a261" points="{max}"/><polyline fill="none" stroke="#264653" stroke-width="1.5" points="{mean}"/>"##
    );
}

/// Failed calls per bucket as bars rising from the bottom; returns the most in one bucket.
fn error_bars(o: &mut String, axes: &Axes, timeline: &[Bucket]) -> f64 {
    let max_err = timeline.iter().map(|b| b.errors).max().unwrap_or(0).max(1) as f64;
    let n = timeline.len().max(1);
    for (i, b) in timeline.iter().enumerate().filter(|(_, b)| b.errors > 0) {
        let h = 40.0 * b.errors as f64 / max_err;
        let _ = write!(
            o,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#e63946" opacity="0.7"/>"##,
            axes.x(i as f64 * BUCKET.as_secs_f64()),
            axes.bottom() - h,
            (PLOT_W / n as f64).max(1.0)
        );
    }
    max_err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_latency_errors_and_marks() {
        let mut tl = vec![Bucket::default(); 30];
        tl[3].prerequests = 10;
        tl[3].pre_latency_sum_us = 5_000;
        tl[3].pre_latency_max_us = 900;
        tl[5].errors = 4;
        let s = svg("a <run>", &tl, &[("kill".into(), 1.5)]);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;run&gt;"));
        assert!(s.contains("polyline") && s.contains("#e63946") && s.contains(">kill<"));
    }
}
