//! The Flotilla server: drives the Raft core with durable storage, talks to peers, applies
//! committed entries to an MVCC key-value store and serves etcd's v3 gRPC API.
#![deny(missing_docs)]

pub mod authority;
pub mod backup;
pub mod cluster;
pub mod compactor;
pub mod config;
pub mod corruption;
pub mod election;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod keys;
pub mod lease;
pub mod lock;
pub mod members;
pub mod metrics;
pub mod mvcc;
pub mod proto;
pub mod runtime;
pub mod serve;
pub mod services;
pub mod shell;
pub mod transport;
pub mod watch;
