//! What a benchmark records while it runs (latencies in an HDR histogram, a timeline, errors by
//! kind) and the summary it prints at the end, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The smallest latency the histograms tell apart, in microseconds.
const LATENCY_LOWEST_US: u64 = 1;
/// The largest latency the histograms hold, in microseconds (an hour); larger ones are
/// recorded as this. Rationale: an open-loop run that falls behind measures from the scheduled
/// send time, so its latencies can grow far beyond any request timeout.
const LATENCY_HIGHEST_US: u64 = 3_600_000_000;
/// Significant digits of the overall histogram: 0.1% resolution.
const OVERALL_SIGNIFICANT_DIGITS: u8 = 3;
/// Significant digits of each timeline bucket's histogram: 1%, plenty for a chart and a tenth
/// of the memory.
const TIMELINE_SIGNIFICANT_DIGITS: u8 = 2;
/// The most timeline buckets kept; past it, neighbours merge and the width doubles, so a run of
/// any length keeps a bounded timeline.
pub const TIMELINE_BUCKETS_MAX: usize = 512;
/// The width of a timeline bucket at the start of a run, in microseconds.
const TIMELINE_BUCKET_WIDTH_INITIAL_US: u64 = 100_000;
/// The most distinct error kinds kept by name; the rest are counted together.
pub const ERROR_KINDS_MAX: usize = 64;
/// The name under which errors beyond [`ERROR_KINDS_MAX`] kinds are counted.
pub const OTHER_ERRORS: &str = "(other kinds)";

fn overall_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(
        LATENCY_LOWEST_US,
        LATENCY_HIGHEST_US,
        OVERALL_SIGNIFICANT_DIGITS,
    )
    .expect("valid histogram bounds")
}

fn timeline_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(
        LATENCY_LOWEST_US,
        LATENCY_HIGHEST_US,
        TIMELINE_SIGNIFICANT_DIGITS,
    )
    .expect("valid histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The requests that completed within one stretch of the run.
#[derive(Clone, Debug)]
struct TimelineBucket {
    latency: Histogram<u32>,
    errors: u64,
}

impl TimelineBucket {
    fn new() -> TimelineBucket {
        TimelineBucket {
            latency: timeline_histogram(),
            errors: 0,
        }
    }

    fn merge(&mut self, other: &TimelineBucket) {
        // Both histograms have the same bounds, so adding cannot fail.
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds");
        self.errors += other.errors;
    }
}

/// Latency over the run, in buckets of equal width by completion time.
#[derive(Clone, Debug)]
struct Timeline {
    bucket_width_us: u64,
    buckets: Vec<TimelineBucket>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            bucket_width_us: TIMELINE_BUCKET_WIDTH_INITIAL_US,
            buckets: Vec::new(),
        }
    }

    fn bucket_at(&mut self, offset: Duration) -> &mut TimelineBucket {
        let offset_us = micros(offset);
        while offset_us / self.bucket_width_us >= TIMELINE_BUCKETS_MAX as u64 {
            self.halve();
        }
        let index = (offset_us / self.bucket_width_us) as usize;
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, TimelineBucket::new);
        }
        &mut self.buckets[index]
    }

    /// Merges neighbouring buckets pairwise and doubles the width.
    fn halve(&mut self) {
        let mut merged = Vec::with_capacity(self.buckets.len().div_ceil(2));
        for pair in self.buckets.chunks(2) {
            let mut bucket = pair[0].clone();
            if let Some(second) = pair.get(1) {
                bucket.merge(second);
            }
            merged.push(bucket);
        }
        self.buckets = merged;
        self.bucket_width_us *= 2;
    }
}

/// Everything recorded during a run. Latencies are in microseconds; offsets are from the
/// start of the run.
#[derive(Clone, Debug)]
pub struct Recorder {
    latency: Histogram<u64>,
    timeline: Timeline,
    errors: BTreeMap<String, u64>,
    succeeded: u64,
    failed: u64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            latency: overall_histogram(),
            timeline: Timeline::new(),
            errors: BTreeMap::new(),
            succeeded: 0,
            failed: 0,
        }
    }

    /// A request that succeeded, completing at `completed_offset` after `latency`.
    pub fn record_success(&mut self, completed_offset: Duration, latency: Duration) {
        let latency_us = micros(latency).max(LATENCY_LOWEST_US);
        self.latency.saturating_record(latency_us);
        self.timeline
            .bucket_at(completed_offset)
            .latency
            .saturating_record(latency_us);
        self.succeeded += 1;
    }

    /// A request that failed with an error of kind `kind` (for gRPC, the code and message).
    pub fn record_error(&mut self, completed_offset: Duration, kind: &str) {
        self.timeline.bucket_at(completed_offset).errors += 1;
        self.failed += 1;
        if let Some(count) = self.errors.get_mut(kind) {
            *count += 1;
        } else if self.errors.len() < ERROR_KINDS_MAX {
            self.errors.insert(kind.to_string(), 1);
        } else {
            *self.errors.entry(OTHER_ERRORS.to_string()).or_insert(0) += 1;
        }
    }

    /// How many requests have failed.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// How many requests have completed, successfully or not.
    pub fn completed(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// The summary of the run, which took `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let elapsed_s = elapsed.as_secs_f64();
        let at = |quantile: f64| self.latency.value_at_quantile(quantile) as f64 / 1000.0;
        let latency_ms = if self.latency.is_empty() {
            LatencySummary::default()
        } else {
            LatencySummary {
                mean: self.latency.mean() / 1000.0,
                p50: at(0.50),
                p90: at(0.90),
                p99: at(0.99),
                p99_9: at(0.999),
                max: self.latency.max() as f64 / 1000.0,
            }
        };
        let mut errors: Vec<(String, u64)> = self
            .errors
            .iter()
            .map(|(kind, count)| (kind.clone(), *count))
            .collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Summary {
            requests: self.completed(),
            succeeded: self.succeeded,
            failed: self.failed,
            elapsed_s,
            throughput_per_s: if elapsed_s > 0.0 {
                self.succeeded as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms,
            errors,
        }
    }

    /// Latency over time: one point per timeline bucket that had any request.
    pub fn timeline_points(&self) -> Vec<TimelinePoint> {
        let width_s = self.timeline.bucket_width_us as f64 / 1e6;
        self.timeline
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, bucket)| !bucket.latency.is_empty() || bucket.errors > 0)
            .map(|(index, bucket)| {
                let ms = |value: u64| value as f64 / 1000.0;
                let empty = bucket.latency.is_empty();
                TimelinePoint {
                    time_s: (index as f64 + 0.5) * width_s,
                    requests: bucket.latency.len(),
                    errors: bucket.errors,
                    p50_ms: (!empty).then(|| ms(bucket.latency.value_at_quantile(0.5))),
                    p99_ms: (!empty).then(|| ms(bucket.latency.value_at_quantile(0.99))),
                    max_ms: (!empty).then(|| ms(bucket.latency.max())),
                }
            })
            .collect()
    }

    /// The width of one timeline point, in seconds.
    pub fn timeline_bucket_width_s(&self) -> f64 {
        self.timeline.bucket_width_us as f64 / 1e6
    }

    /// The latency distribution in `bins_per_decade` logarithmic bins from the decade below the
    /// fastest request to the decade above the slowest (empty if nothing succeeded).
    pub fn latency_bins(&self, bins_per_decade: u32) -> Vec<LatencyBin> {
        if self.latency.is_empty() || bins_per_decade == 0 {
            return Vec::new();
        }
        let low_exponent = (self.latency.min().max(1) as f64).log10().floor();
        let high_exponent = (self.latency.max().max(1) as f64).log10().floor() + 1.0;
        let steps = ((high_exponent - low_exponent) * f64::from(bins_per_decade)).round() as u32;
        let edge =
            |step: u32| 10f64.powf(low_exponent + f64::from(step) / f64::from(bins_per_decade));
        let mut bins: Vec<LatencyBin> = (0..steps)
            .map(|step| LatencyBin {
                low_ms: edge(step) / 1000.0,
                high_ms: edge(step + 1) / 1000.0,
                count: 0,
            })
            .collect();
        // Each recorded value (to the histogram's resolution) goes to exactly one bin.
        for value in self.latency.iter_recorded() {
            let latency_us = value.value_iterated_to().max(1) as f64;
            let position = (latency_us.log10() - low_exponent) * f64::from(bins_per_decade);
            let index = (position.floor().max(0.0) as usize).min(bins.len() - 1);
            bins[index].count += value.count_at_value();
        }
        bins
    }
}

/// Latency figures, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p99_9: f64,
    /// The slowest request.
    pub max: f64,
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Requests completed, successfully or not.
    pub requests: u64,
    /// Requests that succeeded.
    pub succeeded: u64,
    /// Requests that failed.
    pub failed: u64,
    /// From the start of the run to the last completion, in seconds.
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub throughput_per_s: f64,
    /// Latency of the successful requests.
    pub latency_ms: LatencySummary,
    /// Errors by kind, most frequent first.
    pub errors: Vec<(String, u64)>,
}

/// One point of the latency-over-time chart.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelinePoint {
    /// The middle of the bucket, in seconds from the start.
    pub time_s: f64,
    /// Successful requests completed in the bucket.
    pub requests: u64,
    /// Failed requests completed in the bucket.
    pub errors: u64,
    /// Median latency, if any request succeeded.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, if any request succeeded.
    pub p99_ms: Option<f64>,
    /// Slowest request, if any succeeded.
    pub max_ms: Option<f64>,
}

/// One bar of the latency histogram: requests with latency in `[low_ms, high_ms)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyBin {
    /// The bin's lower edge.
    pub low_ms: f64,
    /// The bin's upper edge.
    pub high_ms: f64,
    /// Requests in the bin.
    pub count: u64,
}

impl Summary {
    /// The summary as text for a person, after a one-line description of the run.
    pub fn to_text(&self, description: &str) -> String {
        let latency = &self.latency_ms;
        let mut text = String::new();
        let _ = writeln!(text, "Summary: {description}");
        let _ = writeln!(
            text,
            "  Requests:    {} ({} succeeded, {} failed)",
            self.requests, self.succeeded, self.failed
        );
        let _ = writeln!(text, "  Elapsed:     {:.3} s", self.elapsed_s);
        let _ = writeln!(
            text,
            "  Throughput:  {:.1} requests/s",
            self.throughput_per_s
        );
        let _ = writeln!(
            text,
            "  Latency ms:  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            latency.p50, latency.p90, latency.p99, latency.p99_9, latency.max, latency.mean
        );
        if self.errors.is_empty() {
            let _ = writeln!(text, "  Errors:      none");
        } else {
            let _ = writeln!(text, "  Errors:");
            for (kind, count) in &self.errors {
                let _ = writeln!(text, "    {count:>8}  {kind}");
            }
        }
        text
    }

    /// The summary as one JSON object, with the run's `settings` under "settings".
    pub fn to_json(&self, settings: serde_json::Value) -> serde_json::Value {
        let latency = &self.latency_ms;
        let errors: Vec<serde_json::Value> = self
            .errors
            .iter()
            .map(|(kind, count)| serde_json::json!({ "kind": kind, "count": count }))
            .collect();
        serde_json::json!({
            "settings": settings,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "elapsed_s": self.elapsed_s,
            "throughput_per_s": self.throughput_per_s,
            "latency_ms": {
                "mean": latency.mean,
                "p50": latency.p50,
                "p90": latency.p90,
                "p99": latency.p99,
                "p99_9": latency.p99_9,
                "max": latency.max,
            },
            "errors": errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Latencies of 1, 2, ..., 1000 ms, one completing each millisecond.
    fn one_to_a_thousand() -> Recorder {
        let mut recorder = Recorder::new();
        for latency in 1..=1000 {
            recorder.record_success(ms(latency), ms(latency));
        }
        recorder
    }

    fn close(actual: f64, expected: f64) -> bool {
        // The overall histogram keeps three significant digits.
        (actual - expected).abs() <= expected * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let summary = one_to_a_thousand().summary(Duration::from_secs(2));
        let latency = summary.latency_ms;
        assert!(close(latency.p50, 500.0), "p50 {}", latency.p50);
        assert!(close(latency.p90, 900.0), "p90 {}", latency.p90);
        assert!(close(latency.p99, 990.0), "p99 {}", latency.p99);
        assert!(close(latency.p99_9, 999.0), "p99.9 {}", latency.p99_9);
        assert!(close(latency.max, 1000.0), "max {}", latency.max);
        assert!(close(latency.mean, 500.5), "mean {}", latency.mean);
    }

    #[test]
    fn throughput_counts_successes_over_the_elapsed_time() {
        let mut recorder = one_to_a_thousand();
        recorder.record_error(ms(5), "Unavailable: no leader");
        let summary = recorder.summary(Duration::from_secs(2));
        assert_eq!(summary.requests, 1001);
        assert_eq!(summary.succeeded, 1000);
        assert_eq!(summary.failed, 1);
        assert!((summary.throughput_per_s - 500.0).abs() < 1e-9);
    }

    #[test]
    fn errors_are_counted_by_kind_most_frequent_first() {
        let mut recorder = Recorder::new();
        recorder.record_error(ms(1), "Unavailable: no leader");
        recorder.record_error(ms(2), "DeadlineExceeded: client timeout");
        recorder.record_error(ms(3), "Unavailable: no leader");
        let summary = recorder.summary(ms(10));
        assert_eq!(
            summary.errors,
            vec![
                ("Unavailable: no leader".to_string(), 2),
                ("DeadlineExceeded: client timeout".to_string(), 1),
            ]
        );
        assert_eq!(summary.latency_ms, LatencySummary::default());
    }

    #[test]
    fn error_kinds_beyond_the_bound_are_counted_together() {
        let mut recorder = Recorder::new();
        for kind in 0..ERROR_KINDS_MAX + 10 {
            recorder.record_error(ms(1), &format!("kind {kind}"));
        }
        let summary = recorder.summary(ms(10));
        assert_eq!(summary.errors.len(), ERROR_KINDS_MAX + 1);
        assert!(summary.errors.contains(&(OTHER_ERRORS.to_string(), 10)));
        assert_eq!(summary.failed, ERROR_KINDS_MAX as u64 + 10);
    }

    #[test]
    fn the_timeline_stays_bounded_and_keeps_every_request() {
        let mut recorder = Recorder::new();
        // An hour of one request per second: far more than the bound at the initial width.
        for second in 0..3600 {
            recorder.record_success(Duration::from_secs(second), ms(3));
        }
        let points = recorder.timeline_points();
        assert!(points.len() <= TIMELINE_BUCKETS_MAX);
        assert_eq!(points.iter().map(|p| p.requests).sum::<u64>(), 3600);
        assert!(recorder.timeline_bucket_width_s() >= 3600.0 / TIMELINE_BUCKETS_MAX as f64);
        let last = points.last().unwrap();
        assert!(last.time_s < 3600.0 + recorder.timeline_bucket_width_s());
    }

    #[test]
    fn timeline_points_give_each_buckets_percentiles() {
        let mut recorder = Recorder::new();
        recorder.record_success(ms(10), ms(2));
        recorder.record_success(ms(20), ms(4));
        recorder.record_error(ms(250), "Unavailable: x");
        let points = recorder.timeline_points();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].requests, 2);
        assert!(points[0].max_ms.unwrap() >= 3.99);
        assert_eq!(points[1].requests, 0);
        assert_eq!(points[1].errors, 1);
        assert_eq!(points[1].p50_ms, None);
    }

    #[test]
    fn latency_bins_count_every_request_once() {
        let recorder = one_to_a_thousand();
        let bins = recorder.latency_bins(10);
        assert_eq!(bins.iter().map(|bin| bin.count).sum::<u64>(), 1000);
        for pair in bins.windows(2) {
            assert!((pair[0].high_ms - pair[1].low_ms).abs() < 1e-9);
        }
        assert!(bins.first().unwrap().low_ms <= 1.0);
        assert!(bins.last().unwrap().high_ms >= 1000.0);
    }

    #[test]
    fn the_text_and_json_summaries_carry_the_figures() {
        let mut recorder = one_to_a_thousand();
        recorder.record_error(ms(5), "Unavailable: \"quoted\"");
        let summary = recorder.summary(Duration::from_secs(2));
        let text = summary.to_text("put, 1 client");
        assert!(text.contains("1000 succeeded, 1 failed"), "{text}");
        assert!(text.contains("500.0 requests/s"), "{text}");
        let json = summary.to_json(serde_json::json!({ "workload": "put" }));
        let parsed: serde_json::Value = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(parsed["settings"]["workload"], "put");
        assert_eq!(parsed["failed"], 1);
        assert_eq!(parsed["errors"][0]["kind"], "Unavailable: \"quoted\"");
        assert!(parsed["latency_ms"]["p99"].as_f64().unwrap() > 980.0);
    }
}
