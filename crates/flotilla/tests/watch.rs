//! etcd's Watch service against real `flotilla serve` processes, through the generated gRPC
//! client, response by response (etcdctl's `watch` is in etcdctl.rs). Base port 23450.

mod support;

use std::time::Duration;

use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::watch_client::WatchClient;
use server::proto::etcdserverpb::watch_create_request::FilterType;
use server::proto::etcdserverpb::watch_request::RequestUnion;
use server::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use server::proto::mvccpb::event::EventType;
use support::Cluster;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// A watch stream: requests go in through `requests`, responses come out of `responses`.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl Stream {
    async fn open(channel: tonic::transport::Channel) -> Stream {
        let (requests, receiver) = mpsc::channel(16);
        let responses = WatchClient::new(channel)
            .watch(ReceiverStream::new(receiver))
            .await
            .expect("the watch stream opens")
            .into_inner();
        Stream {
            requests,
            responses,
        }
    }

    async fn send(&self, request: RequestUnion) {
        self.requests
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("the stream takes requests");
    }

    async fn create(&self, create: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(create)).await;
    }

    /// The next response, within five seconds.
    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("a response within 5 s")
            .expect("the stream stays open")
            .expect("the stream has more")
    }

    /// Asserts that nothing arrives for a moment.
    async fn nothing_more(&mut self) {
        let waited =
            tokio::time::timeout(Duration::from_millis(300), self.responses.message()).await;
        assert!(waited.is_err(), "unexpected response: {waited:?}");
    }
}

async fn put(kv: &mut KvClient<tonic::transport::Channel>, key: &str, value: &str) -> i64 {
    kv.put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    })
    .await
    .expect("the put")
    .into_inner()
    .header
    .expect("a header")
    .revision
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

async fn connect(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{endpoint}"))
        .expect("a valid URL")
        .connect()
        .await
        .expect("the member accepts a connection")
}

/// (type, key, value) of each event of a response.
fn events(response: &WatchResponse) -> Vec<(i32, String, String)> {
    response
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("an event has its kv");
            (
                event.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

const PUT: i32 = EventType::Put as i32;
const DELETE: i32 = EventType::Delete as i32;

#[test]
fn watches_deliver_every_change_in_order_with_etcds_responses() {
    let cluster = Cluster::start(3, 23450, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    // Watches are served by every member: this one watches through a follower.
    let follower = (0..3).find(|&index| index != leader).expect("a follower");
    block_on(async {
        let mut kv = KvClient::new(connect(&cluster.nodes[leader].endpoint()).await);
        let mut stream = Stream::open(connect(&cluster.nodes[follower].endpoint()).await).await;

        // A prefix watch with prev_kv, server-assigned id 0.
        stream
            .create(WatchCreateRequest {
                key: b"fruit/".to_vec(),
                range_end: b"fruit0".to_vec(),
                prev_kv: true,
                ..WatchCreateRequest::default()
            })
            .await;
        let created = stream.next().await;
        assert!(created.created, "{created:?}");
        assert_eq!(created.watch_id, 0);
        let header = created.header.expect("a header");
        assert_ne!(header.cluster_id, 0);
        assert_ne!(header.member_id, 0);

        let first = put(&mut kv, "fruit/apple", "red").await;
        let response = stream.next().await;
        assert_eq!(response.watch_id, 0);
        assert_eq!(
            events(&response),
            [(PUT, "fruit/apple".into(), "red".into())]
        );
        assert_eq!(response.events[0].kv.as_ref().unwrap().mod_revision, first);
        assert!(response.events[0].prev_kv.is_none());

        put(&mut kv, "vegetable/leek", "green").await; // outside the range
        put(&mut kv, "fruit/apple", "green").await;
        let response = stream.next().await;
        assert_eq!(
            events(&response),
            [(PUT, "fruit/apple".into(), "green".into())]
        );
        let previous = response.events[0]
            .prev_kv
            .as_ref()
            .expect("prev_kv asked for");
        assert_eq!(previous.value, b"red");

        // One txn's events come in one response, in the txn's order.
        let txn = TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(
                        server::proto::etcdserverpb::request_op::Request::RequestPut(PutRequest {
                            key: b"fruit/cherry".to_vec(),
                            value: b"dark".to_vec(),
                            ..PutRequest::default()
                        }),
                    ),
                },
                RequestOp {
                    request: Some(
                        server::proto::etcdserverpb::request_op::Request::RequestDeleteRange(
                            DeleteRangeRequest {
                                key: b"fruit/apple".to_vec(),
                                ..DeleteRangeRequest::default()
                            },
                        ),
                    ),
                },
            ],
            ..TxnRequest::default()
        };
        kv.txn(txn).await.expect("the txn");
        let response = stream.next().await;
        assert_eq!(
            events(&response),
            [
                (PUT, "fruit/cherry".into(), "dark".into()),
                (DELETE, "fruit/apple".into(), String::new()),
            ]
        );
        let txn_revision = response.events[0].kv.as_ref().unwrap().mod_revision;
        assert_eq!(
            response.events[1].kv.as_ref().unwrap().mod_revision,
            txn_revision
        );

        // A second watcher on the stream, with a client-chosen id, from a past revision (a
        // resumed watch: everything from `first` on, nothing before), without deletes.
        stream
            .create(WatchCreateRequest {
                key: b"fruit/apple".to_vec(),
                start_revision: first,
                filters: vec![FilterType::Nodelete as i32],
                watch_id: 42,
                ..WatchCreateRequest::default()
            })
            .await;
        let created = stream.next().await;
        assert!(created.created);
        assert_eq!(created.watch_id, 42);
        let replayed = stream.next().await;
        assert_eq!(replayed.watch_id, 42);
        assert_eq!(
            events(&replayed),
            [
                (PUT, "fruit/apple".into(), "red".into()),
                (PUT, "fruit/apple".into(), "green".into()),
            ]
        );
        // The same id again is refused.
        stream
            .create(WatchCreateRequest {
                key: b"x".to_vec(),
                watch_id: 42,
                ..WatchCreateRequest::default()
            })
            .await;
        let refused = stream.next().await;
        assert!(refused.created && refused.canceled, "{refused:?}");
        assert_eq!(refused.watch_id, -1);

        // A progress request is answered after everything up to its revision was sent.
        stream
            .send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await;
        let progress = stream.next().await;
        assert_eq!(progress.watch_id, -1);
        assert!(progress.events.is_empty());
        assert!(progress.header.expect("a header").revision >= txn_revision);

        // Canceled: no more events for it.
        stream
            .send(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 0,
            }))
            .await;
        let canceled = stream.next().await;
        assert!(canceled.canceled);
        assert_eq!(canceled.watch_id, 0);
        put(&mut kv, "fruit/banana", "yellow").await;
        stream.nothing_more().await;

        // A watch from a compacted revision is canceled with the compacted revision.
        let latest = put(&mut kv, "fruit/apple", "ripe").await;
        let apple = stream.next().await;
        assert_eq!(apple.watch_id, 42);
        // Through the watched member: it answers once it has applied the compaction itself.
        KvClient::new(connect(&cluster.nodes[follower].endpoint()).await)
            .compact(CompactionRequest {
                revision: latest,
                physical: false,
            })
            .await
            .expect("the compaction");
        stream
            .create(WatchCreateRequest {
                key: b"fruit/apple".to_vec(),
                start_revision: first,
                ..WatchCreateRequest::default()
            })
            .await;
        let created = stream.next().await;
        assert!(created.created);
        // A new id: the canceled watcher's 0 is not given out again.
        assert_ne!(created.watch_id, 0, "{created:?}");
        let compacted = stream.next().await;
        assert!(compacted.canceled, "{compacted:?}");
        assert_eq!(compacted.watch_id, created.watch_id);
        assert_eq!(compacted.compact_revision, latest);
    });
}
