//! etcd's Watch service: each stream's watchers, fed from the MVCC store's history.
//!
//! One task serves one stream. It owns the stream's watchers and, whenever the applied state
//! moves, brings each watcher up to the store's current revision by reading the changes since
//! the watcher's next revision ([`MvccReader::changes`]) and sending them, oldest first, whole
//! revisions at a time. Rationale: with history as the only source, the guarantees etcd
//! documents follow from the reads themselves, on every member: events are *ordered* (by
//! revision, a txn's in its order) and *unique* (each watcher's next revision only grows),
//! there is no gap (*reliable*: each read starts where the last one ended), a revision's events
//! are never split across responses (*atomic*, fragments aside), a new watch from a past
//! revision misses nothing still in history (*resumable*), and a progress notification at
//! revision R is sent only after every event up to R (*bookmarkable*), since the same task
//! sends both in order. A watcher whose next revision was compacted away is canceled with
//! `compact_revision`, never moved forward silently.
//!
//! Isolation: the apply loop never waits for a watcher. A reader that does not keep up only
//! fills its stream's bounded queue; its task then waits, and catches up from history when it
//! can (or is canceled if compaction passed it). What the task holds per idle watcher is its
//! range, options and next revision: about a hundred bytes plus the key and range end.
//!
//! Not done yet: watchers on the same range share no work (each reads the history of its own
//! range when the revision moves).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::mvcc::MvccError;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;
use crate::services::ServiceState;

/// Responses queued for one stream before its task waits for the client to read.
const STREAM_QUEUE_MAX: usize = 128;

/// Events read from history for one watcher at a time; a revision's events are never split,
/// so a large transaction may exceed it.
const EVENTS_PER_READ_MAX: usize = 1000;

/// Watchers one stream may hold.
const WATCHERS_PER_STREAM_MAX: usize = 10_000;

/// The `watch_id` of a response that belongs to no watcher (a progress response), as etcd.
const NO_WATCH_ID: i64 = -1;

/// The Watch service of one member.
pub struct WatchService {
    state: Arc<ServiceState>,
    /// How often watchers that asked for it get a progress notification.
    progress_notify_interval: Duration,
}

impl WatchService {
    /// The service over a member's shared state; `progress_notify_interval` is
    /// `--experimental-watch-progress-notify-interval`.
    pub fn new(state: Arc<ServiceState>, progress_notify_interval: Duration) -> WatchService {
        WatchService {
            state,
            progress_notify_interval,
        }
    }
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let requests = request.into_inner();
        let (responses, stream) = mpsc::channel(STREAM_QUEUE_MAX);
        let session = Session {
            state: Arc::clone(&self.state),
            responses,
            watchers: BTreeMap::new(),
            next_watch_id: 0,
        };
        tokio::spawn(session.run(requests, self.progress_notify_interval));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }
}

/// One watcher of a stream.
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not sent yet.
    next_revision: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
}

impl Watcher {
    /// Whether an event passes this watcher's filters.
    fn wants(&self, event: &Event) -> bool {
        let is_delete = event.r#type == EventType::Delete as i32;
        !(is_delete && self.no_delete || !is_delete && self.no_put)
    }
}

/// Why a stream's task stops: the client went away, or the stream broke.
struct Closed;

/// One Watch stream: its watchers, and where its responses go.
struct Session {
    state: Arc<ServiceState>,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_watch_id: i64,
}

impl Session {
    async fn run(mut self, mut requests: Streaming<WatchRequest>, progress_interval: Duration) {
        let mut applied = self.state.node.watch_status();
        let mut progress = tokio::time::interval(progress_interval);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; progress notifications start one interval in.
        progress.tick().await;
        loop {
            let handled = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    // The client closed its side, or the stream broke: nothing more to read.
                    Ok(None) | Err(_) => Err(Closed),
                },
                changed = applied.changed() => match changed {
                    Ok(()) => self.catch_up().await,
                    Err(_) => Err(Closed),
                },
                _ = progress.tick() => self.notify_progress().await,
            };
            if handled.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Closed> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let response = WatchResponse {
                        header: Some(self.header()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..WatchResponse::default()
                    };
                    self.send(response).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Every watcher is brought up to the current revision first, so that the
                // notification promises only what was sent (bookmarkable).
                self.catch_up().await?;
                let response = WatchResponse {
                    header: Some(self.header()),
                    watch_id: NO_WATCH_ID,
                    ..WatchResponse::default()
                };
                self.send(response).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Closed> {
        let requested_id = create.watch_id;
        let refusal = if requested_id != 0 && self.watchers.contains_key(&requested_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else if requested_id < 0 {
            Some("mvcc: watch ID must not be negative")
        } else if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            Some("etcdserver: too many watchers on one stream")
        } else {
            None
        };
        if let Some(reason) = refusal {
            let response = WatchResponse {
                header: Some(self.header()),
                watch_id: NO_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..WatchResponse::default()
            };
            return self.send(response).await;
        }
        let watch_id = if requested_id != 0 {
            requested_id
        } else {
            // Never an id used before on this stream, as etcd: a late response for a canceled
            // watcher must not be taken for a new one's.
            while self.watchers.contains_key(&self.next_watch_id) {
                self.next_watch_id += 1;
            }
            self.next_watch_id += 1;
            self.next_watch_id - 1
        };
        let current = self.state.reader.current_revision();
        let next_revision = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        let has_filter = |filter: FilterType| create.filters.contains(&(filter as i32));
        let watcher = Watcher {
            next_revision,
            prev_kv: create.prev_kv,
            no_put: has_filter(FilterType::Noput),
            no_delete: has_filter(FilterType::Nodelete),
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            key: create.key,
            range_end: create.range_end,
        };
        self.watchers.insert(watch_id, watcher);
        let created = WatchResponse {
            header: Some(self.header()),
            watch_id,
            created: true,
            ..WatchResponse::default()
        };
        self.send(created).await?;
        // A watch from a past revision starts replaying at once.
        self.catch_up_watcher(watch_id).await
    }

    /// Brings every watcher up to the current revision.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.catch_up_watcher(id).await?;
        }
        Ok(())
    }

    /// Sends one watcher every change from its next revision to the current one, in whole
    /// revisions; cancels it with `compact_revision` if compaction passed its next revision.
    async fn catch_up_watcher(&mut self, watch_id: i64) -> Result<(), Closed> {
        loop {
            let Some(watcher) = self.watchers.get(&watch_id) else {
                return Ok(());
            };
            let current = self.state.reader.current_revision();
            if watcher.next_revision > current {
                return Ok(());
            }
            let read = self.state.reader.changes(
                &watcher.key,
                &watcher.range_end,
                watcher.next_revision,
                EVENTS_PER_READ_MAX,
            );
            let (events, next_revision) = match read {
                Ok(read) => read,
                Err(MvccError::Compacted) => {
                    let compacted = self.state.reader.compacted_revision();
                    self.watchers.remove(&watch_id);
                    let response = WatchResponse {
                        header: Some(self.header()),
                        watch_id,
                        canceled: true,
                        compact_revision: compacted,
                        ..WatchResponse::default()
                    };
                    return self.send(response).await;
                }
                Err(error) => {
                    tracing::error!("watch {watch_id}: reading the history: {error}");
                    self.watchers.remove(&watch_id);
                    let response = WatchResponse {
                        header: Some(self.header()),
                        watch_id,
                        canceled: true,
                        cancel_reason: error.to_string(),
                        ..WatchResponse::default()
                    };
                    return self.send(response).await;
                }
            };
            let watcher = self.watchers.get_mut(&watch_id).expect("looked up above");
            watcher.next_revision = next_revision;
            let prev_kv = watcher.prev_kv;
            let fragment = watcher.fragment;
            let events: Vec<Event> = events
                .into_iter()
                .filter(|event| watcher.wants(event))
                .map(|mut event| {
                    if !prev_kv {
                        event.prev_kv = None;
                    }
                    event
                })
                .collect();
            if !events.is_empty() {
                let header = self.header();
                for response in
                    responses_for(watch_id, header, events, fragment, self.fragment_bytes())
                {
                    self.send(response).await?;
                }
            }
            if next_revision > current {
                return Ok(());
            }
        }
    }

    /// A progress notification to every watcher that asked for them and is caught up.
    async fn notify_progress(&mut self) -> Result<(), Closed> {
        let current = self.state.reader.current_revision();
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.progress_notify && watcher.next_revision > current)
            .map(|(&id, _)| id)
            .collect();
        for watch_id in due {
            let response = WatchResponse {
                header: Some(self.header()),
                watch_id,
                ..WatchResponse::default()
            };
            self.send(response).await?;
        }
        Ok(())
    }

    /// The largest response a fragmenting watcher gets: the largest request the member takes.
    fn fragment_bytes(&self) -> usize {
        self.state.max_request_bytes
    }

    fn header(&self) -> crate::proto::etcdserverpb::ResponseHeader {
        self.state.header(self.state.reader.current_revision())
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Closed> {
        self.responses.send(Ok(response)).await.map_err(|_| Closed)
    }
}

/// The responses that carry `events` for a watcher: one, or, for a watcher that asked for
/// fragments, as many as keep each under `fragment_bytes` (a single event larger than that
/// goes alone), every one but the last marked `fragment`.
fn responses_for(
    watch_id: i64,
    header: crate::proto::etcdserverpb::ResponseHeader,
    events: Vec<Event>,
    fragment: bool,
    fragment_bytes: usize,
) -> Vec<WatchResponse> {
    let whole = WatchResponse {
        header: Some(header),
        watch_id,
        events,
        ..WatchResponse::default()
    };
    if !fragment || whole.encoded_len() <= fragment_bytes {
        return vec![whole];
    }
    let mut responses = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut current_bytes = 0;
    for event in whole.events {
        let event_bytes = event.encoded_len() + 8;
        if !current.is_empty() && current_bytes + event_bytes > fragment_bytes {
            responses.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += event_bytes;
        current.push(event);
    }
    responses.push(current);
    let count = responses.len();
    responses
        .into_iter()
        .enumerate()
        .map(|(position, events)| WatchResponse {
            header: Some(header),
            watch_id,
            fragment: position + 1 < count,
            events,
            ..WatchResponse::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn put_event(key: &str, value_bytes: usize, revision: i64) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_bytes],
                mod_revision: revision,
                ..KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn events_fit_one_response_unless_a_fragmenting_watcher_needs_several() {
        let header = crate::proto::etcdserverpb::ResponseHeader::default();
        let events: Vec<Event> = (0..10).map(|n| put_event("k", 100, n + 2)).collect();
        let one = responses_for(7, header, events.clone(), false, 300);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].events, events);
        assert!(!one[0].fragment);

        let fragments = responses_for(7, header, events.clone(), true, 300);
        assert!(fragments.len() > 1, "{}", fragments.len());
        let last = fragments.len() - 1;
        for (position, response) in fragments.iter().enumerate() {
            assert_eq!(response.fragment, position < last);
            assert_eq!(response.watch_id, 7);
            assert!(!response.events.is_empty());
        }
        let rejoined: Vec<Event> = fragments
            .into_iter()
            .flat_map(|response| response.events)
            .collect();
        assert_eq!(rejoined, events);
    }

    #[test]
    fn filters_drop_puts_or_deletes() {
        let mut watcher = Watcher {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            next_revision: 1,
            prev_kv: false,
            no_put: true,
            no_delete: false,
            progress_notify: false,
            fragment: false,
        };
        let put = put_event("k", 1, 2);
        let delete = Event {
            r#type: EventType::Delete as i32,
            ..put.clone()
        };
        assert!(!watcher.wants(&put));
        assert!(watcher.wants(&delete));
        watcher.no_put = false;
        watcher.no_delete = true;
        assert!(watcher.wants(&put));
        assert!(!watcher.wants(&delete));
    }
}
