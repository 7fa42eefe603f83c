//! The benchmark's load generator: unary gRPC calls straight on an HTTP/2 connection.
//!
//! Rationale, measured (docs/PERFORMANCE.md): the bench shares the machine with the servers it
//! measures, so every microsecond of CPU it spends per request is taken from them. Through
//! tonic's `Channel` a request crossed a buffer task and a body task and left in three writes
//! (headers, the message, an empty frame ending the stream), each a TCP segment the server had
//! to wake up for. Here the headers and the message, ending the stream, are queued together
//! and leave in one write. It speaks plain gRPC over HTTP/2 (etcd's v3 API), so it loads etcd
//! and Flotilla alike.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// gRPC's length-prefixed message header: a compression flag and a 4-byte length.
const MESSAGE_HEADER_BYTES: usize = 5;

/// One HTTP/2 connection; clones share it (HTTP/2 multiplexes their calls).
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<Bytes>,
    /// `http://host:port`, to which each call appends its method's path.
    base: String,
}

impl Connection {
    /// Connects to `url` (`http://host:port`) within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Connection, String> {
        let address = url.trim_start_matches("http://").trim_end_matches('/');
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connecting to {url}: no answer within {timeout:?}"))?
            .map_err(|error| format!("connecting to {url}: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| format!("connecting to {url}: {error}"))?;
        let (sender, connection) = h2::client::Builder::new()
            // Rationale: large windows so that flow control never holds up a response and
            // window updates stay rare.
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(stream)
            .await
            .map_err(|error| format!("HTTP/2 handshake with {url}: {error}"))?;
        tokio::spawn(async move {
            // The connection ends when every sender is dropped or the peer goes away; calls in
            // flight then fail with the error.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            base: format!("http://{address}"),
        })
    }

    /// The URI of a method (`/package.Service/Method`) on this connection's server.
    pub fn method_uri(&self, path: &str) -> Uri {
        format!("{}{path}", self.base)
            .parse()
            .expect("a host and port from a URL that connected, and a method path")
    }

    /// One unary call: sends `request` and returns the decoded response, or the call's status.
    pub async fn unary<Q: Message, R: Message + Default>(
        &self,
        method: &Uri,
        request: &Q,
    ) -> Result<R, Status> {
        let length = request.encoded_len();
        let mut message = BytesMut::with_capacity(MESSAGE_HEADER_BYTES + length);
        message.put_u8(0);
        message.put_u32(
            u32::try_from(length).map_err(|_| Status::invalid_argument("request too large"))?,
        );
        request
            .encode(&mut message)
            .expect("the buffer has room for the encoded length");
        let mut http_request = Request::new(());
        *http_request.method_mut() = Method::POST;
        *http_request.uri_mut() = method.clone();
        let headers = http_request.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));

        let mut sender = self.sender.clone().ready().await.map_err(transport_error)?;
        let (response, mut stream) = sender
            .send_request(http_request, false)
            .map_err(transport_error)?;
        // Queued with the headers: both leave in the connection's next write.
        stream
            .send_data(message.freeze(), true)
            .map_err(transport_error)?;

        let response = response.await.map_err(transport_error)?;
        let (parts, mut body) = response.into_parts();
        // A call that fails at once answers with its status in the headers alone.
        if let Some(status) = failed(&parts.headers) {
            return Err(status);
        }
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport_error)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(transport_error)?;
        match trailers.as_ref().map(Status::from_header_map) {
            Some(Some(status)) if status.code() == Code::Ok => {}
            Some(Some(status)) => return Err(status),
            _ => return Err(Status::internal("the response ended without a gRPC status")),
        }
        decode_message(&data)
    }
}

/// The status in `headers` if it says the call failed.
fn failed(headers: &HeaderMap) -> Option<Status> {
    Status::from_header_map(headers).filter(|status| status.code() != Code::Ok)
}

/// Decodes the one length-prefixed, uncompressed message of a unary response.
fn decode_message<R: Message + Default>(data: &[u8]) -> Result<R, Status> {
    if data.len() < MESSAGE_HEADER_BYTES {
        return Err(Status::internal("the response carries no message"));
    }
    if data[0] != 0 {
        return Err(Status::internal("the response is compressed"));
    }
    let length = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let body = &data[MESSAGE_HEADER_BYTES..];
    if body.len() != length {
        return Err(Status::internal(format!(
            "the response's message says {length} bytes and carries {}",
            body.len()
        )));
    }
    R::decode(body).map_err(|error| Status::internal(format!("decoding the response: {error}")))
}

/// A connection or stream failure, as the status tonic gives for it.
fn transport_error(error: h2::Error) -> Status {
    Status::unavailable(format!("HTTP/2: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use server::proto::etcdserverpb::PutResponse;

    #[test]
    fn a_framed_message_decodes_and_a_damaged_one_is_refused() {
        let response = PutResponse::default();
        let mut framed = vec![0u8, 0, 0, 0, 0];
        assert!(decode_message::<PutResponse>(&framed).is_ok());
        assert_eq!(decode_message::<PutResponse>(&framed).unwrap(), response);
        framed[4] = 3;
        let error = decode_message::<PutResponse>(&framed).unwrap_err();
        assert_eq!(error.code(), Code::Internal);
        let error = decode_message::<PutResponse>(&[1, 0, 0, 0, 0]).unwrap_err();
        assert!(error.message().contains("compressed"), "{error:?}");
        let error = decode_message::<PutResponse>(&[0, 0]).unwrap_err();
        assert!(error.message().contains("no message"), "{error:?}");
    }

    #[test]
    fn only_a_failing_status_in_the_headers_ends_a_call() {
        let mut headers = HeaderMap::new();
        assert!(failed(&headers).is_none());
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(failed(&headers).is_none());
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver: too many requests"),
        );
        let status = failed(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "etcdserver: too many requests");
    }
}
