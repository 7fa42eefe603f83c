//! A chart of a benchmark run as a standalone SVG file: latency over time (p50, p99 and max of
//! each stretch of the run) above a latency histogram. Both latency axes are logarithmic,
//! because one slow stretch would otherwise flatten everything else against the axis.

use std::fmt::Write as _;

use super::report::{LatencyBin, TimelinePoint};

/// What the chart shows.
#[derive(Clone, Debug)]
pub struct Chart {
    /// The first line, in bold.
    pub title: String,
    /// Lines under the title (what was run, the headline figures); long lines are wrapped at
    /// commas, and at most [`HEADER_LINES_MAX`] lines are shown.
    pub lines: Vec<String>,
    /// Latency over time.
    pub timeline: Vec<TimelinePoint>,
    /// The width of one timeline point, in seconds.
    pub timeline_bucket_width_s: f64,
    /// The latency histogram.
    pub bins: Vec<LatencyBin>,
}

/// The most lines shown under the title.
pub const HEADER_LINES_MAX: usize = 3;
/// The longest header line, in characters, before it is wrapped.
const HEADER_LINE_CHARS_MAX: usize = 115;
const WIDTH_PX: f64 = 960.0;
const HEIGHT_PX: f64 = 820.0;
const LEFT_PX: f64 = 90.0;
const RIGHT_PX: f64 = 150.0;
/// The plotting areas: (top, bottom) of the timeline and of the histogram.
const TIMELINE_PX: (f64, f64) = (130.0, 420.0);
const HISTOGRAM_PX: (f64, f64) = (510.0, 760.0);
const SERIES: [(&str, &str); 3] = [("p50", "#1f77b4"), ("p99", "#ff7f0e"), ("max", "#d62728")];

/// Escapes text for an SVG text node or attribute.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A tick label: no trailing zeros, no exponent.
fn label(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Splits `text` after commas into lines of at most `max_chars` characters (a longer piece
/// without commas stays whole).
fn wrap(text: &str, max_chars: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for piece in text.split_inclusive(", ") {
        if !current.is_empty()
            && current.chars().count() + piece.trim_end().chars().count() > max_chars
        {
            lines.push(current.trim_end().to_string());
            current.clear();
        }
        current.push_str(piece);
    }
    if !current.trim().is_empty() {
        lines.push(current.trim_end().to_string());
    }
    lines
}

/// A step of 1, 2 or 5 times a power of ten giving about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let rough = (span / target).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(rough.log10().floor());
    let fraction = rough / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A logarithmic axis over whole decades.
#[derive(Clone, Copy, Debug)]
struct LogAxis {
    low_exponent: f64,
    high_exponent: f64,
}

impl LogAxis {
    /// Decades covering every value (values are positive milliseconds).
    fn covering(values: impl Iterator<Item = f64>) -> LogAxis {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for value in values.filter(|value| value.is_finite() && *value > 0.0) {
            low = low.min(value);
            high = high.max(value);
        }
        if !low.is_finite() {
            return LogAxis {
                low_exponent: -1.0,
                high_exponent: 1.0,
            };
        }
        let low_exponent = low.log10().floor();
        let high_exponent = high.log10().ceil().max(low_exponent + 1.0);
        LogAxis {
            low_exponent,
            high_exponent,
        }
    }

    /// Where `value` falls, from 0 (the low end) to 1 (the high end).
    fn fraction(&self, value: f64) -> f64 {
        let exponent = value.max(1e-12).log10();
        ((exponent - self.low_exponent) / (self.high_exponent - self.low_exponent)).clamp(0.0, 1.0)
    }

    /// Ticks at 1, 2 and 5 times each power of ten; labels only on powers of ten when the
    /// axis spans many decades.
    fn ticks(&self) -> Vec<(f64, bool)> {
        let decades = (self.high_exponent - self.low_exponent) as i32;
        let mut ticks = Vec::new();
        for exponent in self.low_exponent as i32..=self.high_exponent as i32 {
            for multiple in [1.0, 2.0, 5.0] {
                let value = multiple * 10f64.powi(exponent);
                if value.log10() <= self.high_exponent + 1e-9 {
                    ticks.push((value, multiple == 1.0 || decades <= 3));
                }
            }
        }
        ticks
    }
}

fn y_in(band: (f64, f64), fraction: f64) -> f64 {
    band.1 - fraction * (band.1 - band.0)
}

fn x_in(fraction: f64) -> f64 {
    LEFT_PX + fraction * (WIDTH_PX - LEFT_PX - RIGHT_PX)
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, extra: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}"{extra}>{}</text>"#,
        escape(content)
    );
}

fn line(out: &mut String, from: (f64, f64), to: (f64, f64), style: &str) {
    let _ = writeln!(
        out,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" {style}/>"#,
        from.0, from.1, to.0, to.1
    );
}

/// The left axis of a log-scaled latency band, with grid lines.
fn latency_axis(out: &mut String, axis: &LogAxis, band: (f64, f64), title: &str) {
    for (value, labelled) in axis.ticks() {
        let y = y_in(band, axis.fraction(value));
        let grid = if labelled { "#dddddd" } else { "#f0f0f0" };
        line(
            out,
            (LEFT_PX, y),
            (WIDTH_PX - RIGHT_PX, y),
            &format!(r#"stroke="{grid}""#),
        );
        if labelled {
            text(out, LEFT_PX - 8.0, y + 4.0, "end", "", &label(value));
        }
    }
    let middle = (band.0 + band.1) / 2.0;
    text(
        out,
        24.0,
        middle,
        "middle",
        &format!(r#" transform="rotate(-90 24 {middle:.1})""#),
        title,
    );
}

fn frame(out: &mut String, band: (f64, f64)) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT_PX}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333333"/>"##,
        band.0,
        WIDTH_PX - LEFT_PX - RIGHT_PX,
        band.1 - band.0
    );
}

/// A panel's title, above its band.
fn panel_title(out: &mut String, band: (f64, f64), title: &str) {
    text(
        out,
        LEFT_PX,
        band.0 - 12.0,
        "start",
        r#" font-weight="bold""#,
        title,
    );
}

fn timeline_panel(out: &mut String, chart: &Chart) {
    let band = TIMELINE_PX;
    panel_title(
        out,
        band,
        &format!(
            "Latency over time (each point: requests completed in {} s)",
            label(chart.timeline_bucket_width_s)
        ),
    );
    let axis = LogAxis::covering(
        chart
            .timeline
            .iter()
            .flat_map(|point| [point.p50_ms, point.p99_ms, point.max_ms])
            .flatten(),
    );
    latency_axis(out, &axis, band, "latency (ms, log scale)");
    let end_s = chart
        .timeline
        .iter()
        .map(|point| point.time_s + chart.timeline_bucket_width_s / 2.0)
        .fold(chart.timeline_bucket_width_s, f64::max);
    let step_s = nice_step(end_s, 8.0);
    let mut tick_s = 0.0;
    while tick_s <= end_s + 1e-9 {
        let x = x_in(tick_s / end_s);
        line(out, (x, band.1), (x, band.1 + 5.0), r##"stroke="#333333""##);
        text(out, x, band.1 + 20.0, "middle", "", &label(tick_s));
        tick_s += step_s;
    }
    text(
        out,
        x_in(0.5),
        band.1 + 42.0,
        "middle",
        "",
        "time since the start (s)",
    );
    for (position, (name, colour)) in SERIES.iter().enumerate() {
        let points: Vec<String> = chart
            .timeline
            .iter()
            .filter_map(|point| {
                let value = [point.p50_ms, point.p99_ms, point.max_ms][position]?;
                Some(format!(
                    "{:.1},{:.1}",
                    x_in(point.time_s / end_s),
                    y_in(band, axis.fraction(value))
                ))
            })
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
        }
        let legend_y = band.0 + 20.0 + 22.0 * position as f64;
        let legend_x = WIDTH_PX - RIGHT_PX + 16.0;
        line(
            out,
            (legend_x, legend_y - 4.0),
            (legend_x + 24.0, legend_y - 4.0),
            &format!(r#"stroke="{colour}" stroke-width="3""#),
        );
        text(out, legend_x + 32.0, legend_y, "start", "", name);
    }
    let errors: u64 = chart.timeline.iter().map(|point| point.errors).sum();
    if errors > 0 {
        for point in chart.timeline.iter().filter(|point| point.errors > 0) {
            let x = x_in(point.time_s / end_s);
            line(
                out,
                (x, band.1 - 8.0),
                (x, band.1),
                r##"stroke="#000000" stroke-width="2""##,
            );
        }
        text(
            out,
            WIDTH_PX - RIGHT_PX + 16.0,
            band.0 + 20.0 + 22.0 * 3.0,
            "start",
            "",
            &format!("| {errors} errors"),
        );
    }
    frame(out, band);
}

fn histogram_panel(out: &mut String, chart: &Chart) {
    let band = HISTOGRAM_PX;
    panel_title(out, band, "Latency histogram (successful requests)");
    let axis = LogAxis::covering(chart.bins.iter().flat_map(|bin| [bin.low_ms, bin.high_ms]));
    let most = chart
        .bins
        .iter()
        .map(|bin| bin.count)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let step = nice_step(most, 5.0).max(1.0);
    let top = (most / step).ceil() * step;
    let mut tick = 0.0;
    while tick <= top + 1e-9 {
        let y = y_in(band, tick / top);
        line(
            out,
            (LEFT_PX, y),
            (WIDTH_PX - RIGHT_PX, y),
            r##"stroke="#dddddd""##,
        );
        text(out, LEFT_PX - 8.0, y + 4.0, "end", "", &label(tick));
        tick += step;
    }
    let middle = (band.0 + band.1) / 2.0;
    text(
        out,
        24.0,
        middle,
        "middle",
        &format!(r#" transform="rotate(-90 24 {middle:.1})""#),
        "requests",
    );
    for bin in &chart.bins {
        let left = x_in(axis.fraction(bin.low_ms));
        let right = x_in(axis.fraction(bin.high_ms));
        let height = bin.count as f64 / top * (band.1 - band.0);
        let _ = writeln!(
            out,
            r##"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="#1f77b4" stroke="#ffffff" stroke-width="0.5"><title>{} to {} ms: {} requests</title></rect>"##,
            band.1 - height,
            (right - left).max(0.5),
            label(bin.low_ms),
            label(bin.high_ms),
            bin.count
        );
    }
    for (value, labelled) in axis.ticks() {
        let x = x_in(axis.fraction(value));
        line(out, (x, band.1), (x, band.1 + 5.0), r##"stroke="#333333""##);
        if labelled {
            text(out, x, band.1 + 20.0, "middle", "", &label(value));
        }
    }
    text(
        out,
        x_in(0.5),
        band.1 + 42.0,
        "middle",
        "",
        "latency (ms, log scale)",
    );
    frame(out, band);
}

/// The chart as a complete SVG document.
pub fn render(chart: &Chart) -> String {
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}" viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH_PX}" height="{HEIGHT_PX}" fill="#ffffff"/>"##
    );
    text(
        &mut out,
        LEFT_PX,
        28.0,
        "start",
        r#" font-size="16" font-weight="bold""#,
        &chart.title,
    );
    let lines = chart
        .lines
        .iter()
        .flat_map(|line| wrap(line, HEADER_LINE_CHARS_MAX))
        .take(HEADER_LINES_MAX);
    for (number, line) in lines.enumerate() {
        text(
            &mut out,
            LEFT_PX,
            52.0 + 18.0 * number as f64,
            "start",
            "",
            &line,
        );
    }
    timeline_panel(&mut out, chart);
    histogram_panel(&mut out, chart);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::report::Recorder;
    use super::*;
    use std::time::Duration;

    /// Checks that every element is closed in order and attributes are quoted: enough of XML's
    /// well-formedness to catch a broken writer. Returns the element names in document order.
    fn well_formed(document: &str) -> Result<Vec<String>, String> {
        let body = document
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .ok_or("no XML declaration")?;
        let mut open: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            let between = &rest[..start];
            check_text(between)?;
            let end = rest[start..].find('>').ok_or("unclosed tag")? + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                let expected = open.pop().ok_or(format!("stray </{name}>"))?;
                if expected != name {
                    return Err(format!("</{name}> closes <{expected}>"));
                }
            } else {
                let self_closing = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let name = tag
                    .split_whitespace()
                    .next()
                    .ok_or("empty tag")?
                    .to_string();
                check_attributes(&tag[name.len()..])?;
                names.push(name.clone());
                if !self_closing {
                    open.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        check_text(rest)?;
        if !open.is_empty() {
            return Err(format!("unclosed elements: {open:?}"));
        }
        Ok(names)
    }

    fn check_text(text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            let entity_end = rest[at..].find(';').ok_or("bare &")? + at;
            let entity = &rest[at + 1..entity_end];
            if !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                return Err(format!("unknown entity &{entity};"));
            }
            rest = &rest[entity_end + 1..];
        }
        Ok(())
    }

    fn check_attributes(attributes: &str) -> Result<(), String> {
        let mut rest = attributes.trim();
        while !rest.is_empty() {
            let equals = rest
                .find('=')
                .ok_or(format!("attribute without value: {rest}"))?;
            let value = rest[equals + 1..]
                .strip_prefix('"')
                .ok_or("unquoted attribute")?;
            let close = value.find('"').ok_or("unterminated attribute")?;
            check_text(&value[..close])?;
            if value[..close].contains('<') {
                return Err("< in an attribute".into());
            }
            rest = value[close + 1..].trim_start();
        }
        Ok(())
    }

    fn sample_chart() -> Chart {
        let mut recorder = Recorder::new();
        for request in 0..5000u64 {
            let latency_us = 200 + (request * 7919) % 20_000;
            recorder.record_success(
                Duration::from_millis(request),
                Duration::from_micros(latency_us),
            );
        }
        recorder.record_error(Duration::from_millis(2500), "Unavailable: no leader");
        Chart {
            title: "put <64 clients> & \"8\" conns".into(),
            lines: vec!["1234.5 requests/s".into()],
            timeline: recorder.timeline_points(),
            timeline_bucket_width_s: recorder.timeline_bucket_width_s(),
            bins: recorder.latency_bins(10),
        }
    }

    #[test]
    fn the_chart_is_well_formed_svg_with_labelled_axes() {
        let document = render(&sample_chart());
        let names = well_formed(&document).unwrap();
        assert_eq!(names.first().map(String::as_str), Some("svg"));
        assert!(names.iter().any(|name| name == "polyline"));
        assert!(names.iter().filter(|name| *name == "rect").count() > 10);
        assert!(document.contains("time since the start (s)"));
        assert!(document.contains("latency (ms, log scale)"));
        assert!(document.contains(">requests<"));
        assert!(document.contains("put &lt;64 clients&gt; &amp; &quot;8&quot; conns"));
        assert!(document.contains("1 errors"));
        assert!(!document.contains("NaN"));
        assert!(!document.contains("inf"));
    }

    #[test]
    fn an_empty_run_still_gives_a_well_formed_chart() {
        let chart = Chart {
            title: "nothing".into(),
            lines: Vec::new(),
            timeline: Vec::new(),
            timeline_bucket_width_s: 0.1,
            bins: Vec::new(),
        };
        let document = render(&chart);
        well_formed(&document).unwrap();
        assert!(!document.contains("NaN"));
    }

    #[test]
    fn the_checker_catches_broken_documents() {
        let declaration = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
        assert!(well_formed(&format!("{declaration}<svg><g></svg></g>")).is_err());
        assert!(well_formed(&format!("{declaration}<svg><text>a & b</text></svg>")).is_err());
        assert!(well_formed(&format!("{declaration}<svg><rect x=1/></svg>")).is_err());
        assert!(well_formed(&format!("{declaration}<svg>")).is_err());
    }

    #[test]
    fn long_header_lines_wrap_at_commas() {
        let lines = wrap("aaaa, bbbb, cccc, dddd", 11);
        assert_eq!(lines, vec!["aaaa, bbbb,", "cccc, dddd"]);
        assert_eq!(wrap("short", 80), vec!["short"]);
        assert_eq!(wrap("", 80), Vec::<String>::new());
        let chart = Chart {
            lines: vec!["x, ".repeat(200)],
            ..sample_chart()
        };
        let document = render(&chart);
        // Three header lines at most, each short enough to fit.
        assert_eq!(document.matches(">x, x").count(), HEADER_LINES_MAX);
    }

    #[test]
    fn tick_labels_are_plain_numbers() {
        assert_eq!(label(0.1), "0.1");
        assert_eq!(label(2.0), "2");
        assert_eq!(label(500.0), "500");
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(1.5), "1.5");
        assert_eq!(label(0.30000000000000004), "0.3");
        assert_eq!(nice_step(47.0, 8.0), 10.0);
        assert_eq!(nice_step(5.0, 8.0), 1.0);
        assert_eq!(nice_step(12.0, 8.0), 2.0);
    }
}
