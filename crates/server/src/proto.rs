//! etcd's v3 API as generated from `proto/` (package names as etcd's, so that clients work
//! unchanged).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Key-value types: `KeyValue`, `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Requests, responses and services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// etcd's lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Flotilla's own log-entry messages.
pub mod flotillapb {
    tonic::include_proto!("flotillapb");
}

/// Flotilla's wire format for Raft messages between peers (see `crate::transport`).
pub mod raftpb {
    tonic::include_proto!("raftpb");
}
