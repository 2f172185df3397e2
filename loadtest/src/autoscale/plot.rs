//! An SVG per scenario: one panel per policy, with the load (agents' worth), the agents it
//! needed, the agents paid for and the agents ready over time, and the failed calls per
//! second. Written by hand, as `drive::plot` is.

use std::fmt::Write as _;

use super::run::PolicyRun;

const W: f64 = 900.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const GAP: f64 = 45.0;

/// Renders the runs of one scenario, one panel each, under `title`.
pub fn svg(title: &str, runs: &[(String, &PolicyRun)], duration_s: f64) -> String {
    let plot_w = W - LEFT - RIGHT;
    let h = TOP + runs.len() as f64 * (PANEL_H + GAP) + 10.0;
    let max_agents = runs
        .iter()
        .flat_map(|(_, r)| r.samples.iter())
        .map(|s| f64::from(s.pods.max(s.need)).max(s.load))
        .fold(1.0, f64::max)
        .ceil()
        + 1.0;
    let x = |t: f64| LEFT + plot_w * t / duration_s.max(1.0);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="18" font-size="13">{}</text>"#,
        escape(title)
    );
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
    for (k, (name, run)) in runs.iter().enumerate() {
        let top = TOP + k as f64 * (PANEL_H + GAP) + 15.0;
        let y = |v: f64| top + PANEL_H * (1.0 - v / max_agents);
        // failed calls per second, from the drives' 100 ms buckets
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
        let yf = |v: f64| top + PANEL_H * (1.0 - v / max_fail);
        let _ = write!(
            o,
            r##"<text x="{LEFT}" y="{:.1}" font-size="12" font-weight="bold">{}</text><rect x="{LEFT}" y="{top:.1}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
            top - 4.0,
            escape(name)
        );
        let step = if max_agents > 12.0 { 2 } else { 1 };
        let mut a = 0;
        while f64::from(a) <= max_agents {
            let yy = y(f64::from(a));
            let _ = write!(
                o,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{a}</text>"##,
                LEFT + plot_w,
                LEFT - 4.0,
                yy + 4.0
            );
            a += step;
        }
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{:.1}" fill="#d62728">{max_fail:.0}/s</text>"##,
            LEFT + plot_w + 4.0,
            top + 10.0
        );
        let tstep = if duration_s > 100.0 { 20.0 } else { 10.0 };
        let mut t = 0.0;
        while t <= duration_s + 1e-9 {
            let _ = write!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"#,
                x(t),
                top + PANEL_H + 13.0
            );
            t += tstep;
        }
        for (i, f) in fails.iter().enumerate() {
            if *f > 0.0 {
                let _ = write!(
                    o,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.6"/>"##,
                    x(i as f64),
                    yf(*f),
                    (x(1.0) - x(0.0)).max(1.0),
                    top + PANEL_H - yf(*f)
                );
            }
        }
        let line = |o: &mut String, color: &str, width: f64, pts: Vec<(f64, f64)>, step: bool| {
            let mut d = String::new();
            let mut prev: Option<f64> = None;
            for (t, v) in pts {
                let (xx, yy) = (x(t), y(v));
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
        };
        let s = &run.samples;
        line(
            &mut o,
            "#bbb",
            4.0,
            s.iter().map(|s| (s.t, s.load)).collect(),
            false,
        );
        line(
            &mut o,
            "#000",
            1.0,
            s.iter().map(|s| (s.t, f64::from(s.need))).collect(),
            true,
        );
        line(
            &mut o,
            "#1f77b4",
            2.0,
            s.iter().map(|s| (s.t, f64::from(s.pods))).collect(),
            true,
        );
        line(
            &mut o,
            "#2ca02c",
            1.5,
            s.iter().map(|s| (s.t, f64::from(s.ready))).collect(),
            true,
        );
    }
    o.push_str("</svg>\n");
    o
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
