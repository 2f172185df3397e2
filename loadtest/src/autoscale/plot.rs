//! An SVG per scenario: one panel per policy, with the load (agents' worth), the agents it
//! needed, the agents paid for and the agents ready over time, and the failed calls per
//! second. Written by hand, as `drive::plot` is.

use std::fmt::Write as _;

use super::run::{PolicyRun, Sample};

use crate::svg::{self, Axes};

const W: f64 = 900.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const GAP: f64 = 45.0;

/// Renders the runs of one scenario, one panel each, under `title`.
pub fn svg(title: &str, runs: &[(String, &PolicyRun)], duration_s: f64) -> String {
    let h = TOP + runs.len() as f64 * (PANEL_H + GAP) + 10.0;
    let max_agents = runs
        .iter()
        .flat_map(|(_, r)| r.samples.iter())
        .map(|s| f64::from(s.pods.max(s.need)).max(s.load))
        .fold(1.0, f64::max)
        .ceil()
        + 1.0;
    let mut o = String::new();
    svg::open(&mut o, W, h, LEFT, title);
    legend(&mut o);
    for (k, (name, run)) in runs.iter().enumerate() {
        let axes = Axes {
            left: LEFT,
            top: TOP + k as f64 * (PANEL_H + GAP) + 15.0,
            width: W - LEFT - RIGHT,
            height: PANEL_H,
            secs: duration_s.max(1.0),
        };
        panel(&mut o, &axes, name, run, max_agents);
    }
    o.push_str("</svg>\n");
    o
}

/// What each line's colour means, under the title.
fn legend(o: &mut String) {
    let legend = [
        ("#bbb", "load (agents' worth)"),
        ("#000", "agents needed"),
        ("#1f77b4", "agents paid (ready + starting)"),
        ("#2ca02c", "agents ready"),
        ("#d62728", "failed calls/s (right axis)"),
    ];
    let mut lx = LEFT;
    for (c, label) in legend {
        let _ = write!(
            o,
            r#"<rect x="{lx}" y="26" width="12" height="4" fill="{c}"/><text x="{}" y="31">{label}</text>"#,
            lx + 15.0
        );
        lx += 30.0 + label.len() as f64 * 5.6;
    }
}

/// One policy's panel: its frame and axes, the failed calls per second and the agent lines.
fn panel(o: &mut String, axes: &Axes, name: &str, run: &PolicyRun, max_agents: f64) {
    let (top, plot_w) = (axes.top, axes.width);
    let y = |v: f64| top + PANEL_H * (1.0 - v / max_agents);
    let _ = write!(
        o,
        r##"<text x="{LEFT}" y="{:.1}" font-size="12" font-weight="bold">{}</text><rect x="{LEFT}" y="{top:.1}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
        top - 4.0,
        svg::escape(name)
    );
    let step = if max_agents > 12.0 { 2 } else { 1 };
    let mut a = 0;
    while f64::from(a) <= max_agents {
        axes.grid_line(o, y(f64::from(a)), &a.to_string());
        a += step;
    }
    axes.time_labels(o, if axes.secs > 100.0 { 20.0 } else { 10.0 });
    fail_bars(o, axes, run);
    let s = &run.samples;
    let line = |o: &mut String, color: &str, width: f64, v: fn(&Sample) -> f64, step: bool| {
        let pts = s.iter().map(|s| (axes.x(s.t), y(v(s))));
        path(o, color, width, pts, step);
    };
    line(o, "#bbb", 4.0, |s| s.load, false);
    line(o, "#000", 1.0, |s| f64::from(s.need), true);
    line(o, "#1f77b4", 2.0, |s| f64::from(s.pods), true);
    line(o, "#2ca02c", 1.5, |s| f64::from(s.ready), true);
}

/// Failed calls per second, from the drives' 100 ms buckets, as bars on the right axis.
fn fail_bars(o: &mut String, axes: &Axes, run: &PolicyRun) {
    let mut fails: Vec<f64> = Vec::new();
    for d in &run.drives {
        for (i, b) in d.timeline.iter().enumerate() {
            let s = i / 10;
            if fails.len() <= s {
                fails.resize(s + 1, 0.0);
            }
            fails[s] += b.errors as f64;
        }
    }
    let max_fail = fails.iter().copied().fold(0.0, f64::max).max(10.0);
    let yf = |v: f64| axes.top + PANEL_H * (1.0 - v / max_fail);
    let _ = write!(
        o,
        r##"<text x="{:.1}" y="{:.1}" fill="#d62728">{max_fail:.0}/s</text>"##,
        LEFT + axes.width + 4.0,
        axes.top + 10.0
    );
    for (i, f) in fails.iter().enumerate() {
        if *f > 0.0 {
            let _ = write!(
                o,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.6"/>"##,
                axes.x(i as f64),
                yf(*f),
                (axes.x(1.0) - axes.x(0.0)).max(1.0),
                axes.bottom() - yf(*f)
            );
        }
    }
}

/// A line through `pts` (already placed); `step`: as a staircase (a count held until it
/// changes).
fn path(
    o: &mut String,
    color: &str,
    width: f64,
    pts: impl Iterator<Item = (f64, f64)>,
    step: bool,
) {
    let mut d = String::new();
    let mut prev: Option<f64> = None;
    for (xx, yy) in pts {
        match prev {
            None => {
                let _ = write!(d, "M{xx:.1},{yy:.1}");
            }
            Some(py) if step => {
                let _ = write!(d, " L{xx:.1},{py:.1} L{xx:.1},{yy:.1}");
            }
            Some(_) => {
                let _ = write!(d, " L{xx:.1},{yy:.1}");
            }
        }
        prev = Some(yy);
    }
    let _ = write!(
        o,
        r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}"/>"#
    );
}
