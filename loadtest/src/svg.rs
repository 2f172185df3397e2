//! The hand-written SVG both plots draw on (a drive's timeline, an autoscaling run's panels):
//! the document's head, a plot area with time along x, its grid lines and labels. One place, so
//! the two plots read alike and no SVG library is needed.

use std::fmt::Write as _;

/// Opens a `width` × `height` document on white with `title` at `left`.
pub(crate) fn open(o: &mut String, width: f64, height: f64, left: f64, title: &str) {
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{left}" y="18" font-size="13">{}</text>"#,
        escape(title)
    );
}

/// `s` safe inside an SVG text element.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A plot area: `secs` seconds from `left` over `width`, from `top` down `height`.
pub(crate) struct Axes {
    /// The area's left edge.
    pub(crate) left: f64,
    /// The area's top edge.
    pub(crate) top: f64,
    /// Its width.
    pub(crate) width: f64,
    /// Its height.
    pub(crate) height: f64,
    /// The time the width spans, seconds (positive).
    pub(crate) secs: f64,
}

impl Axes {
    /// Where `t` seconds fall along x.
    pub(crate) fn x(&self, t: f64) -> f64 {
        self.left + self.width * t / self.secs
    }

    /// The area's bottom edge.
    pub(crate) fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// The time axis: a label `{t}s` under the area every `step` seconds.
    pub(crate) fn time_labels(&self, o: &mut String, step: f64) {
        let mut t = 0.0;
        while t <= self.secs + 1e-9 {
            let _ = write!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"#,
                self.x(t),
                self.bottom() + 14.0
            );
            t += step;
        }
    }

    /// The value axis: a grid line across the area at height `y`, `label` left of it.
    pub(crate) fn grid_line(&self, o: &mut String, y: f64, label: &str) {
        let _ = write!(
            o,
            r##"<line x1="{}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            self.left,
            self.left + self.width,
            self.left - 4.0,
            y + 4.0
        );
    }
}
