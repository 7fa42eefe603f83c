//! etcd's JSON gateway, on the client port: `POST /v3/<service>/<method>` with the JSON form of
//! the request, answered with the JSON form of the response, so that `curl` examples from
//! etcd's documentation work unchanged. Each call goes to the same service code as its gRPC
//! form.
//!
//! The JSON form is the gateway's: field names as in the .proto files, bytes as base64, 64-bit
//! integers as strings (numbers are accepted in requests too), fields at their default value
//! left out, enums by name (numbers accepted). Errors are `{"error":..,"code":..,"message":..}`
//! with the HTTP status of the gRPC code, as grpc-gateway writes them.
//!
//! Served: `kv/range`, `kv/put`, `kv/deleterange`, `kv/txn`, `kv/compaction`, `lease/grant`,
//! `lease/revoke`, `lease/timetolive`, `lease/leases` (and etcd 3.4's `kv/lease/...` paths for
//! the last three), `maintenance/status|alarm|defragment|hash|hashkv|transfer-leadership`,
//! `cluster/member/list|add|remove|update|promote`. Not yet: `watch`, `lease/keepalive` and
//! `maintenance/snapshot` (streams), and auth; they answer 501 naming the call.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tonic::Request;

use crate::lease::LeaseService;
use crate::proto::etcdserverpb::cluster_server::Cluster as _;
use crate::proto::etcdserverpb::compare::TargetUnion;
use crate::proto::etcdserverpb::kv_server::Kv as _;
use crate::proto::etcdserverpb::lease_server::Lease as _;
use crate::proto::etcdserverpb::maintenance_server::Maintenance as _;
use crate::proto::etcdserverpb::request_op::Request as OpRequest;
use crate::proto::etcdserverpb::response_op::Response as OpResponse;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, Compare, DefragmentRequest, DeleteRangeRequest,
    DeleteRangeResponse, HashKvRequest, HashRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, Member, MemberAddRequest, MemberListRequest,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, StatusRequest, TxnRequest,
    TxnResponse,
};
use crate::proto::mvccpb::KeyValue;
use crate::services::{ClusterService, KvService, MaintenanceService, ServiceState};

/// What the gateway calls into: the services' state and the member's Lease service.
struct Gateway {
    services: Arc<ServiceState>,
    leases: Arc<LeaseService>,
}

/// The gateway's routes: `/v3/...` (and `/v3beta/...`, etcd 3.4's older prefix).
pub fn routes(services: Arc<ServiceState>, leases: Arc<LeaseService>) -> axum::Router {
    let state = Arc::new(Gateway { services, leases });
    axum::Router::new()
        .route("/v3/{service}/{*method}", post(call))
        .route("/v3beta/{service}/{*method}", post(call))
        .route("/v3/{service}", post(not_yet))
        .route("/v3beta/{service}", post(not_yet))
        .with_state(state)
}

/// A gateway error: the HTTP status and the gRPC code and message.
struct GatewayError(tonic::Status);

impl From<tonic::Status> for GatewayError {
    fn from(status: tonic::Status) -> Self {
        GatewayError(status)
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.0;
        let code = status.code() as i32;
        let body = json!({"error": status.message(), "message": status.message(), "code": code});
        (http_status(status.code()), json_response(&body)).into_response()
    }
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn call(
    State(gateway): State<Arc<Gateway>>,
    Path((service, method)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let state = Arc::clone(&gateway.services);
    let request: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(invalid("the request body must be a JSON object")),
            Err(error) => return Err(invalid(&format!("the request body is not JSON: {error}"))),
        }
    };
    let fields = Fields(&request);
    let answer = match (service.as_str(), method.as_str()) {
        ("kv", "range") => {
            let request = range_request(&fields)?;
            let response = KvService(state)
                .range(Request::new(request))
                .await?
                .into_inner();
            range_response(&response)
        }
        ("kv", "put") => {
            let request = put_request(&fields)?;
            let response = KvService(state)
                .put(Request::new(request))
                .await?
                .into_inner();
            put_response(&response)
        }
        ("kv", "deleterange") => {
            let request = delete_request(&fields)?;
            let response = KvService(state)
                .delete_range(Request::new(request))
                .await?
                .into_inner();
            delete_response(&response)
        }
        ("kv", "txn") => {
            let request = txn_request(&fields)?;
            let response = KvService(state)
                .txn(Request::new(request))
                .await?
                .into_inner();
            txn_response(&response)
        }
        ("lease", "grant") => {
            let request = LeaseGrantRequest {
                ttl: fields.integer("TTL")?,
                id: fields.integer("ID")?,
            };
            let response = gateway
                .leases
                .lease_grant(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            put_integer(&mut out, "ID", response.id);
            put_integer(&mut out, "TTL", response.ttl);
            if !response.error.is_empty() {
                out.insert("error".into(), Value::String(response.error.clone()));
            }
            out
        }
        ("lease", "revoke") | ("kv", "lease/revoke") => {
            let request = LeaseRevokeRequest {
                id: fields.integer("ID")?,
            };
            let response = gateway
                .leases
                .lease_revoke(Request::new(request))
                .await?
                .into_inner();
            with_header(&response.header)
        }
        ("lease", "timetolive") | ("kv", "lease/timetolive") => {
            let request = LeaseTimeToLiveRequest {
                id: fields.integer("ID")?,
                keys: fields.boolean("keys")?,
            };
            let response = gateway
                .leases
                .lease_time_to_live(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            put_integer(&mut out, "ID", response.id);
            put_integer(&mut out, "TTL", response.ttl);
            put_integer(&mut out, "grantedTTL", response.granted_ttl);
            if !response.keys.is_empty() {
                let keys: Vec<Value> = response.keys.iter().map(|key| base64_value(key)).collect();
                out.insert("keys".into(), Value::Array(keys));
            }
            out
        }
        ("lease", "leases") | ("kv", "lease/leases") => {
            let response = gateway
                .leases
                .lease_leases(Request::new(LeaseLeasesRequest {}))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            let leases: Vec<Value> = response
                .leases
                .iter()
                .map(|lease| {
                    let mut fields = Map::new();
                    put_integer(&mut fields, "ID", lease.id);
                    Value::Object(fields)
                })
                .collect();
            if !leases.is_empty() {
                out.insert("leases".into(), Value::Array(leases));
            }
            out
        }
        ("kv", "compaction") => {
            let request = CompactionRequest {
                revision: fields.integer("revision")?,
                physical: fields.boolean("physical")?,
            };
            let response = KvService(state)
                .compact(Request::new(request))
                .await?
                .into_inner();
            with_header(&response.header)
        }
        ("maintenance", "status") => {
            let response = MaintenanceService(state)
                .status(Request::new(StatusRequest {}))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            if !response.version.is_empty() {
                out.insert("version".into(), Value::String(response.version.clone()));
            }
            put_integer(&mut out, "dbSize", response.db_size);
            put_unsigned(&mut out, "leader", response.leader);
            put_unsigned(&mut out, "raftIndex", response.raft_index);
            put_unsigned(&mut out, "raftTerm", response.raft_term);
            put_unsigned(&mut out, "raftAppliedIndex", response.raft_applied_index);
            if !response.errors.is_empty() {
                out.insert("errors".into(), json!(response.errors));
            }
            put_integer(&mut out, "dbSizeInUse", response.db_size_in_use);
            put_bool(&mut out, "isLearner", response.is_learner);
            out
        }
        ("cluster", "member/list") => {
            let response = ClusterService(state)
                .member_list(Request::new(MemberListRequest {
                    linearizable: fields.boolean("linearizable")?,
                }))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            let members: Vec<Value> = response.members.iter().map(member_value).collect();
            out.insert("members".into(), Value::Array(members));
            out
        }
        ("cluster", "member/add") => {
            let request = MemberAddRequest {
                peer_ur_ls: fields.strings("peerURLs")?,
                is_learner: fields.boolean("isLearner")?,
            };
            let response = ClusterService(state)
                .member_add(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            if let Some(member) = &response.member {
                out.insert("member".into(), member_value(member));
            }
            out.insert("members".into(), members_value(&response.members));
            out
        }
        ("cluster", "member/remove") => {
            let request = MemberRemoveRequest {
                id: fields.unsigned("ID")?,
            };
            let response = ClusterService(state)
                .member_remove(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            out.insert("members".into(), members_value(&response.members));
            out
        }
        ("cluster", "member/update") => {
            let request = MemberUpdateRequest {
                id: fields.unsigned("ID")?,
                peer_ur_ls: fields.strings("peerURLs")?,
            };
            let response = ClusterService(state)
                .member_update(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            out.insert("members".into(), members_value(&response.members));
            out
        }
        ("cluster", "member/promote") => {
            let request = MemberPromoteRequest {
                id: fields.unsigned("ID")?,
            };
            let response = ClusterService(state)
                .member_promote(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            out.insert("members".into(), members_value(&response.members));
            out
        }
        ("maintenance", "alarm") => {
            let request = AlarmRequest {
                action: fields.enumeration("action", &["GET", "ACTIVATE", "DEACTIVATE"])?,
                member_id: fields.unsigned("memberID")?,
                alarm: fields.enumeration("alarm", &["NONE", "NOSPACE", "CORRUPT"])?,
            };
            let response = MaintenanceService(state)
                .alarm(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            let alarms: Vec<Value> = response
                .alarms
                .iter()
                .map(|alarm| {
                    let mut fields = Map::new();
                    put_unsigned(&mut fields, "memberID", alarm.member_id);
                    let name =
                        AlarmType::try_from(alarm.alarm).map_or("NONE", |kind| kind.as_str_name());
                    if alarm.alarm != 0 {
                        fields.insert("alarm".into(), Value::String(name.to_string()));
                    }
                    Value::Object(fields)
                })
                .collect();
            if !alarms.is_empty() {
                out.insert("alarms".into(), Value::Array(alarms));
            }
            out
        }
        ("maintenance", "defragment") => {
            let response = MaintenanceService(state)
                .defragment(Request::new(DefragmentRequest {}))
                .await?
                .into_inner();
            with_header(&response.header)
        }
        ("maintenance", "hash") => {
            let response = MaintenanceService(state)
                .hash(Request::new(HashRequest {}))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            // 32-bit integers are JSON numbers.
            out.insert("hash".into(), json!(response.hash));
            out
        }
        ("maintenance", "hashkv") => {
            let request = HashKvRequest {
                revision: fields.integer("revision")?,
            };
            let response = MaintenanceService(state)
                .hash_kv(Request::new(request))
                .await?
                .into_inner();
            let mut out = with_header(&response.header);
            out.insert("hash".into(), json!(response.hash));
            put_integer(&mut out, "compact_revision", response.compact_revision);
            put_integer(&mut out, "hash_revision", response.hash_revision);
            out
        }
        ("maintenance", "transfer-leadership") => {
            let request = MoveLeaderRequest {
                target_id: fields.unsigned("targetID")?,
            };
            let response = MaintenanceService(state)
                .move_leader(Request::new(request))
                .await?
                .into_inner();
            with_header(&response.header)
        }
        _ => {
            return Err(GatewayError(tonic::Status::unimplemented(format!(
                "the gateway's /v3/{service}/{method} is not served by Flotilla yet"
            ))))
        }
    };
    Ok(json_response(&Value::Object(answer)).into_response())
}

fn json_response(body: &Value) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// A service path with no method (`/v3/watch`, Watch's streaming form): not served yet.
async fn not_yet(Path(service): Path<String>) -> GatewayError {
    GatewayError(tonic::Status::unimplemented(format!(
        "the gateway's /v3/{service} is not served by Flotilla yet"
    )))
}

fn range_request(fields: &Fields<'_>) -> Result<RangeRequest, GatewayError> {
    Ok(RangeRequest {
        key: fields.bytes("key")?,
        range_end: fields.bytes("range_end")?,
        limit: fields.integer("limit")?,
        revision: fields.integer("revision")?,
        sort_order: fields.enumeration("sort_order", &["NONE", "ASCEND", "DESCEND"])?,
        sort_target: fields
            .enumeration("sort_target", &["KEY", "VERSION", "CREATE", "MOD", "VALUE"])?,
        serializable: fields.boolean("serializable")?,
        keys_only: fields.boolean("keys_only")?,
        count_only: fields.boolean("count_only")?,
        min_mod_revision: fields.integer("min_mod_revision")?,
        max_mod_revision: fields.integer("max_mod_revision")?,
        min_create_revision: fields.integer("min_create_revision")?,
        max_create_revision: fields.integer("max_create_revision")?,
    })
}

fn put_request(fields: &Fields<'_>) -> Result<PutRequest, GatewayError> {
    Ok(PutRequest {
        key: fields.bytes("key")?,
        value: fields.bytes("value")?,
        lease: fields.integer("lease")?,
        prev_kv: fields.boolean("prev_kv")?,
        ignore_value: fields.boolean("ignore_value")?,
        ignore_lease: fields.boolean("ignore_lease")?,
    })
}

fn delete_request(fields: &Fields<'_>) -> Result<DeleteRangeRequest, GatewayError> {
    Ok(DeleteRangeRequest {
        key: fields.bytes("key")?,
        range_end: fields.bytes("range_end")?,
        prev_kv: fields.boolean("prev_kv")?,
    })
}

fn txn_request(fields: &Fields<'_>) -> Result<TxnRequest, GatewayError> {
    let compare = fields
        .objects("compare")?
        .iter()
        .map(|compare| {
            let compare = Fields(compare);
            let target =
                compare.enumeration("target", &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])?;
            let target_union = match target {
                0 => TargetUnion::Version(compare.integer("version")?),
                1 => TargetUnion::CreateRevision(compare.integer("create_revision")?),
                2 => TargetUnion::ModRevision(compare.integer("mod_revision")?),
                3 => TargetUnion::Value(compare.bytes("value")?),
                _ => TargetUnion::Lease(compare.integer("lease")?),
            };
            Ok(Compare {
                result: compare
                    .enumeration("result", &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])?,
                target,
                key: compare.bytes("key")?,
                target_union: Some(target_union),
                range_end: compare.bytes("range_end")?,
            })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    let operations = |name: &str| -> Result<Vec<RequestOp>, GatewayError> {
        fields
            .objects(name)?
            .iter()
            .map(|operation| {
                let operation = Fields(operation);
                let request = if let Some(range) = operation.object("request_range")? {
                    OpRequest::RequestRange(range_request(&Fields(range))?)
                } else if let Some(put) = operation.object("request_put")? {
                    OpRequest::RequestPut(put_request(&Fields(put))?)
                } else if let Some(delete) = operation.object("request_delete_range")? {
                    OpRequest::RequestDeleteRange(delete_request(&Fields(delete))?)
                } else if let Some(txn) = operation.object("request_txn")? {
                    OpRequest::RequestTxn(txn_request(&Fields(txn))?)
                } else {
                    return Err(invalid("a txn operation names no request"));
                };
                Ok(RequestOp {
                    request: Some(request),
                })
            })
            .collect()
    };
    Ok(TxnRequest {
        compare,
        success: operations("success")?,
        failure: operations("failure")?,
    })
}

fn range_response(response: &RangeResponse) -> Map<String, Value> {
    let mut out = with_header(&response.header);
    let kvs: Vec<Value> = response.kvs.iter().map(key_value).collect();
    if !kvs.is_empty() {
        out.insert("kvs".into(), Value::Array(kvs));
    }
    put_bool(&mut out, "more", response.more);
    put_integer(&mut out, "count", response.count);
    out
}

fn put_response(response: &PutResponse) -> Map<String, Value> {
    let mut out = with_header(&response.header);
    if let Some(previous) = &response.prev_kv {
        out.insert("prev_kv".into(), key_value(previous));
    }
    out
}

fn delete_response(response: &DeleteRangeResponse) -> Map<String, Value> {
    let mut out = with_header(&response.header);
    put_integer(&mut out, "deleted", response.deleted);
    let previous: Vec<Value> = response.prev_kvs.iter().map(key_value).collect();
    if !previous.is_empty() {
        out.insert("prev_kvs".into(), Value::Array(previous));
    }
    out
}

fn txn_response(response: &TxnResponse) -> Map<String, Value> {
    let mut out = with_header(&response.header);
    put_bool(&mut out, "succeeded", response.succeeded);
    let responses: Vec<Value> = response
        .responses
        .iter()
        .filter_map(|operation| {
            let (name, fields) = match operation.response.as_ref()? {
                OpResponse::ResponseRange(range) => ("response_range", range_response(range)),
                OpResponse::ResponsePut(put) => ("response_put", put_response(put)),
                OpResponse::ResponseDeleteRange(delete) => {
                    ("response_delete_range", delete_response(delete))
                }
                OpResponse::ResponseTxn(txn) => ("response_txn", txn_response(txn)),
            };
            let mut wrapped = Map::new();
            wrapped.insert(name.into(), Value::Object(fields));
            Some(Value::Object(wrapped))
        })
        .collect();
    if !responses.is_empty() {
        out.insert("responses".into(), Value::Array(responses));
    }
    out
}

fn member_value(member: &Member) -> Value {
    let mut fields = Map::new();
    put_unsigned(&mut fields, "ID", member.id);
    if !member.name.is_empty() {
        fields.insert("name".into(), Value::String(member.name.clone()));
    }
    if !member.peer_ur_ls.is_empty() {
        fields.insert("peerURLs".into(), json!(member.peer_ur_ls));
    }
    if !member.client_ur_ls.is_empty() {
        fields.insert("clientURLs".into(), json!(member.client_ur_ls));
    }
    put_bool(&mut fields, "isLearner", member.is_learner);
    Value::Object(fields)
}

fn members_value(members: &[Member]) -> Value {
    Value::Array(members.iter().map(member_value).collect())
}

fn base64_value(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn invalid(message: &str) -> GatewayError {
    GatewayError(tonic::Status::invalid_argument(message.to_string()))
}

/// A request's fields, read as the gateway's JSON mapping writes them.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn bytes(&self, name: &str) -> Result<Vec<u8>, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(text)) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                .map_err(|_| invalid(&format!("{name}: {text:?} is not base64"))),
            Some(other) => Err(invalid(&format!("{name}: {other} is not a base64 string"))),
        }
    }

    fn objects(&self, name: &str) -> Result<Vec<&Map<String, Value>>, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(fields) => Ok(fields),
                    other => Err(invalid(&format!("{name}: {other} is not an object"))),
                })
                .collect(),
            Some(other) => Err(invalid(&format!("{name}: {other} is not a list"))),
        }
    }

    fn object(&self, name: &str) -> Result<Option<&Map<String, Value>>, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(fields)),
            Some(other) => Err(invalid(&format!("{name}: {other} is not an object"))),
        }
    }

    fn integer(&self, name: &str) -> Result<i64, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(number)) => number
                .as_i64()
                .ok_or_else(|| invalid(&format!("{name}: {number} is not an integer"))),
            Some(Value::String(text)) => text
                .parse()
                .map_err(|_| invalid(&format!("{name}: {text:?} is not an integer"))),
            Some(other) => Err(invalid(&format!("{name}: {other} is not an integer"))),
        }
    }

    fn unsigned(&self, name: &str) -> Result<u64, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(number)) => number
                .as_u64()
                .ok_or_else(|| invalid(&format!("{name}: {number} is not an unsigned integer"))),
            Some(Value::String(text)) => text
                .parse()
                .map_err(|_| invalid(&format!("{name}: {text:?} is not an unsigned integer"))),
            Some(other) => Err(invalid(&format!(
                "{name}: {other} is not an unsigned integer"
            ))),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(invalid(&format!("{name}: {other} is not a string"))),
                })
                .collect(),
            Some(other) => Err(invalid(&format!(
                "{name}: {other} is not a list of strings"
            ))),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(invalid(&format!("{name}: {other} is not true or false"))),
        }
    }

    fn enumeration(&self, name: &str, names: &[&str]) -> Result<i32, GatewayError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::String(text)) => names
                .iter()
                .position(|candidate| candidate == text)
                .map(|position| position as i32)
                .ok_or_else(|| invalid(&format!("{name}: {text:?} is not one of {names:?}"))),
            Some(Value::Number(number)) => number
                .as_i64()
                .and_then(|value| i32::try_from(value).ok())
                .ok_or_else(|| invalid(&format!("{name}: {number} is not a valid value"))),
            Some(other) => Err(invalid(&format!("{name}: {other} is not a valid value"))),
        }
    }
}

fn with_header(header: &Option<ResponseHeader>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(header) = header {
        let mut fields = Map::new();
        put_unsigned(&mut fields, "cluster_id", header.cluster_id);
        put_unsigned(&mut fields, "member_id", header.member_id);
        put_integer(&mut fields, "revision", header.revision);
        put_unsigned(&mut fields, "raft_term", header.raft_term);
        out.insert("header".into(), Value::Object(fields));
    }
    out
}

fn key_value(kv: &KeyValue) -> Value {
    let mut fields = Map::new();
    if !kv.key.is_empty() {
        fields.insert("key".into(), base64_value(&kv.key));
    }
    put_integer(&mut fields, "create_revision", kv.create_revision);
    put_integer(&mut fields, "mod_revision", kv.mod_revision);
    put_integer(&mut fields, "version", kv.version);
    if !kv.value.is_empty() {
        fields.insert("value".into(), base64_value(&kv.value));
    }
    put_integer(&mut fields, "lease", kv.lease);
    Value::Object(fields)
}

/// 64-bit integers go as strings, and zero not at all, as the gateway writes them.
fn put_integer(fields: &mut Map<String, Value>, name: &str, value: i64) {
    if value != 0 {
        fields.insert(name.into(), Value::String(value.to_string()));
    }
}

fn put_unsigned(fields: &mut Map<String, Value>, name: &str, value: u64) {
    if value != 0 {
        fields.insert(name.into(), Value::String(value.to_string()));
    }
}

fn put_bool(fields: &mut Map<String, Value>, name: &str, value: bool) {
    if value {
        fields.insert(name.into(), Value::Bool(true));
    }
}
