//! `flotilla bench --watchers N`: watch streams that receive every change the run's writes
//! make, and how long each change took from its write being sent to its event arriving.
//!
//! Each watcher is its own gRPC stream (spread round-robin over the endpoints) watching every
//! key. A write's send time is recorded under the revision its answer names; each event's
//! arrival under the revision it carries; the two are joined after the run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use server::proto::etcdserverpb::watch_client::WatchClient;
use server::proto::etcdserverpb::watch_request::RequestUnion;
use server::proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the watchers may take after the last write to receive its event.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(10);

/// Every write's send time, by the revision its answer named.
#[derive(Default)]
pub struct WriteTimes {
    sent_at: Mutex<HashMap<i64, Instant>>,
}

impl WriteTimes {
    /// Records that the write answered with `revision` was sent at `sent_at`.
    pub fn record(&self, revision: i64, sent_at: Instant) {
        self.sent_at
            .lock()
            .expect("no writer panics")
            .insert(revision, sent_at);
    }
}

/// What one watch stream received: each event's revision and arrival, or why it failed.
type Arrivals = Result<Vec<(i64, Instant)>, String>;

/// The watch streams of a run.
pub struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<Arrivals>>,
    /// The last revision written, once the writes are done: the watchers stop after it.
    last_revision: watch::Sender<Option<i64>>,
}

/// What the watchers saw.
pub struct WatchReport {
    /// How many watchers.
    pub watchers: usize,
    /// Events received in all.
    pub events: u64,
    /// Events expected (each write's, by every watcher).
    pub expected: u64,
    /// From send to arrival, in milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
    /// Watchers that failed, with why.
    pub errors: Vec<String>,
}

impl Watchers {
    /// Opens `count` watch streams over `urls`, each watching every key from now on; returns
    /// once every stream has confirmed its watch.
    pub async fn open(urls: &[String], count: usize) -> Result<Watchers, String> {
        let (last_revision, stop) = watch::channel(None);
        let mut tasks = Vec::with_capacity(count);
        let mut created = Vec::with_capacity(count);
        for index in 0..count {
            let url = urls[index % urls.len()].clone();
            let (confirmed, confirmation) = tokio::sync::oneshot::channel();
            created.push(confirmation);
            tasks.push(tokio::spawn(watch_one(url, stop.clone(), confirmed)));
        }
        for confirmation in created {
            confirmation
                .await
                .map_err(|_| "a watch stream failed before its watch was created".to_string())?;
        }
        Ok(Watchers {
            tasks,
            last_revision,
        })
    }

    /// Tells the watchers the last revision written, waits for them, and joins what they
    /// received with the writes' send times.
    pub async fn finish(self, writes: &WriteTimes) -> WatchReport {
        let sent_at = std::mem::take(&mut *writes.sent_at.lock().expect("no writer panics"));
        let last = sent_at.keys().copied().max();
        let _ = self.last_revision.send(Some(last.unwrap_or(0)));
        let watchers = self.tasks.len();
        let mut histogram =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid");
        let mut events = 0;
        let mut errors = Vec::new();
        for task in self.tasks {
            match task.await {
                Ok(Ok(arrivals)) => {
                    for (revision, arrived) in arrivals {
                        events += 1;
                        if let Some(sent) = sent_at.get(&revision) {
                            let micros = arrived.saturating_duration_since(*sent).as_micros();
                            let _ = histogram.record((micros as u64).max(1));
                        }
                    }
                }
                Ok(Err(error)) => errors.push(error),
                Err(error) => errors.push(format!("a watcher task failed: {error}")),
            }
        }
        let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        WatchReport {
            watchers,
            events,
            expected: sent_at.len() as u64 * watchers as u64,
            latency_ms: [at(0.5), at(0.9), at(0.99), histogram.max() as f64 / 1000.0],
            errors,
        }
    }
}

/// One watch stream: every event's revision and arrival, until the last revision written
/// has arrived (or [`DRAIN_WAIT_MAX`] after the writes ended).
async fn watch_one(
    url: String,
    mut stop: watch::Receiver<Option<i64>>,
    confirmed: tokio::sync::oneshot::Sender<()>,
) -> Arrivals {
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .map_err(|error| format!("{url}: {error}"))?
        .connect()
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            ..WatchCreateRequest::default()
        })),
    };
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    requests
        .send(create)
        .await
        .map_err(|_| "the watch request was not taken".to_string())?;
    let mut responses = WatchClient::new(channel)
        .watch(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        ))
        .await
        .map_err(|status| format!("{url}: watch: {}", status.message()))?
        .into_inner();
    let mut confirmed = Some(confirmed);
    let mut arrivals = Vec::new();
    let mut highest = 0;
    let mut deadline: Option<Instant> = None;
    loop {
        if let (Some(last), Some(_)) = (*stop.borrow(), deadline) {
            if highest >= last {
                return Ok(arrivals);
            }
        }
        let wait_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            response = responses.message() => {
                let response = response
                    .map_err(|status| format!("{url}: watch: {}", status.message()))?
                    .ok_or_else(|| format!("{url}: the watch stream ended"))?;
                let arrived = Instant::now();
                if response.created {
                    if let Some(confirmed) = confirmed.take() {
                        let _ = confirmed.send(());
                    }
                }
                for event in &response.events {
                    let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    highest = highest.max(revision);
                    arrivals.push((revision, arrived));
                }
            }
            changed = stop.changed(), if deadline.is_none() => {
                if changed.is_err() {
                    return Ok(arrivals);
                }
                deadline = Some(Instant::now() + DRAIN_WAIT_MAX);
            }
            _ = tokio::time::sleep_until(wait_until) => {
                return Err(format!(
                    "{url}: events up to revision {highest} arrived; the writes went further"
                ));
            }
        }
    }
}
