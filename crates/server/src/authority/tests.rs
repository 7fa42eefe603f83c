//! [`TolerantAuthority`] between a client and h2's own server, over in-memory connections:
//! hand-made frames for what etcdctl sends, and h2's own client (an independent HPACK
//! encoder, with its dynamic table, Huffman coding and never-indexed fields) for everything
//! else, which must reach the server exactly as it was sent.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

#[test]
fn repaired_authority_keeps_authorities_and_strips_schemes() {
    let cases: [(&str, Option<Option<&str>>); 9] = [
        ("127.0.0.1:2379", None),
        ("localhost", None),
        ("[::1]:2379", None),
        ("http://127.0.0.1:2379", Some(Some("127.0.0.1:2379"))),
        ("https://127.0.0.1:2379/", Some(Some("127.0.0.1:2379"))),
        ("HTTP://node1:2379/some/path", Some(Some("node1:2379"))),
        ("unix:///tmp/etcd.sock", Some(None)),
        ("http://", Some(None)),
        ("two words", Some(None)),
    ];
    for (value, expected) in cases {
        let repaired = repaired_authority(value.as_bytes());
        let expected = expected.map(|authority| authority.map(|text| text.as_bytes().to_vec()));
        assert_eq!(repaired, expected, "{value:?}");
    }
}

/// How long a test waits for the other end before failing rather than hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An h2 server on `connection`, behind [`TolerantAuthority`] (re-encoding every block when
/// `re_encoding`): answers each request with 200 and returns, for each, its authority, path,
/// headers and body, once the client goes away.
async fn serve_h2(connection: DuplexStream, re_encoding: bool) -> Vec<Received> {
    let connection = if re_encoding {
        TolerantAuthority::re_encoding_every_block(connection)
    } else {
        TolerantAuthority::new(connection)
    };
    let mut server = h2::server::handshake(connection)
        .await
        .expect("the handshake");
    let mut requests = Vec::new();
    // Until the client goes away, whether it says goodbye or just closes the connection.
    while let Some(Ok((request, mut respond))) = server.accept().await {
        let (parts, mut body) = request.into_parts();
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("a body chunk");
            body.flow_control()
                .release_capacity(chunk.len())
                .expect("capacity");
            received.put_slice(&chunk);
        }
        // h2 does not say whether a field came never-indexed (hpack's tests check that it is
        // kept so), so a received field is sensitive as far as this list goes.
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec(), false))
            .collect();
        requests.push((
            parts.uri.authority().map(|authority| authority.to_string()),
            parts.uri.path().to_string(),
            headers,
            received.freeze(),
        ));
        respond
            .send_response(http::Response::new(()), true)
            .expect("a response");
    }
    requests
}

/// Header name, value and whether it is sensitive (sent never-indexed).
type HeaderList = Vec<(String, Vec<u8>, bool)>;

/// What the server saw of one request: its authority, path, headers and body.
type Received = (Option<String>, String, HeaderList, Bytes);

/// A frame header.
fn frame_header(frames: &mut BytesMut, length: usize, frame_type: u8, flags: u8, stream: u32) {
    frames.put_slice(&(length as u32).to_be_bytes()[1..]);
    frames.put_u8(frame_type);
    frames.put_u8(flags);
    frames.put_u32(stream);
}

/// A literal with incremental indexing of a static table name, its value Huffman-encoded, as
/// grpc-go's encoder writes `:authority` and `:path`.
fn indexed_literal(block: &mut BytesMut, static_name_index: u8, value: &str) {
    block.put_u8(0x40 | static_name_index);
    let encoded = huffman::encode(value.as_bytes());
    assert!(encoded.len() < 127, "a one-byte length");
    block.put_u8(0x80 | encoded.len() as u8);
    block.put_slice(&encoded);
}

/// Writes `frames` as a client would, reads whatever the server writes until the client's
/// side is dropped, and returns what the server saw.
async fn exchange(frames: BytesMut) -> Vec<Received> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve_h2(server, false));
    client.write_all(&frames).await.expect("the client writes");
    // Read the server's frames for a while (its SETTINGS and responses), then hang up.
    let mut answers = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        let mut buffer = [0u8; 4096];
        loop {
            match client.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answers.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    drop(client);
    let requests = tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .expect("the server ends")
        .expect("the server task");
    // No RST_STREAM (type 3) in what the server wrote, as far as the frames go.
    let mut rest = &answers[..];
    assert!(rest.len() >= 9, "the server wrote its settings");
    while rest.len() >= 9 {
        let length =
            (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        assert_ne!(rest[3], 0x3, "the server reset a stream: {answers:?}");
        rest = &rest[(9 + length).min(rest.len())..];
    }
    requests
}

/// What etcdctl 3.4 sends for `--endpoints=http://127.0.0.1:2379`: a Huffman-encoded
/// `:authority` with its scheme, indexed for the next request, which refers to it. Both
/// requests reach the server with the scheme removed; so do one split across CONTINUATION
/// frames, padded and with priority fields, and one whose authority is no URL at all, which
/// arrives without one.
#[tokio::test]
async fn authorities_with_a_scheme_reach_the_server_without_it() {
    let mut frames = BytesMut::from(CONNECTION_PREFACE);
    frame_header(&mut frames, 0, 0x4, 0, 0); // SETTINGS, empty.

    // Stream 1: POST, http, then :path and :authority indexed (62 = authority, 63 = path).
    let mut block = BytesMut::new();
    block.put_slice(&[0x83, 0x86]);
    indexed_literal(&mut block, 4, "/etcdserverpb.Maintenance/Status");
    indexed_literal(&mut block, 1, "http://127.0.0.1:2379");
    block.put_u8(0x00); // A literal with a new name: content-type.
    block.put_u8(12);
    block.put_slice(b"content-type");
    block.put_u8(16);
    block.put_slice(b"application/grpc");
    frame_header(&mut frames, block.len(), 0x1, 0x4 | 0x1, 1);
    frames.put_slice(&block);

    // Stream 3: the same, by reference to the dynamic table.
    frame_header(&mut frames, 4, 0x1, 0x4 | 0x1, 3);
    frames.put_slice(&[0x83, 0x86, 0xbf, 0xbe]);

    // Stream 5: padded, with priority, its block split in two.
    let block = [0x83, 0x86, 0xbf, 0xbe];
    let padding = 3;
    frame_header(&mut frames, 1 + 5 + 2 + padding, 0x1, 0x8 | 0x20 | 0x1, 5);
    frames.put_u8(padding as u8);
    frames.put_slice(&[0, 0, 0, 0, 15]);
    frames.put_slice(&block[..2]);
    frames.put_slice(&[0; 3]);
    frame_header(&mut frames, 2, 0x9, 0x4, 5);
    frames.put_slice(&block[2..]);

    // Stream 7: an authority that is no URL either.
    let mut block = BytesMut::new();
    block.put_slice(&[0x83, 0x86, 0xbf]);
    indexed_literal(&mut block, 1, "unix:///tmp/etcd.sock");
    frame_header(&mut frames, block.len(), 0x1, 0x4 | 0x1, 7);
    frames.put_slice(&block);

    let requests = exchange(frames).await;
    let summary: Vec<(Option<&str>, &str)> = requests
        .iter()
        .map(|(authority, path, _, _)| (authority.as_deref(), path.as_str()))
        .collect();
    let path = "/etcdserverpb.Maintenance/Status";
    assert_eq!(
        summary,
        vec![
            (Some("127.0.0.1:2379"), path),
            (Some("127.0.0.1:2379"), path),
            (Some("127.0.0.1:2379"), path),
            (None, path),
        ]
    );
    assert_eq!(
        requests[0].2,
        vec![(
            "content-type".to_string(),
            b"application/grpc".to_vec(),
            false
        )]
    );
}

/// A stream that does not start with HTTP/2's preface goes to h2 as it is, and h2 refuses it
/// as it would have.
#[tokio::test]
async fn a_stream_that_is_not_http2_passes_unchanged() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut rewritten = TolerantAuthority::new(server);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(client);
    let mut seen = Vec::new();
    rewritten.read_to_end(&mut seen).await.unwrap();
    assert_eq!(seen, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

/// Every header byte a value may hold, in an order that depends on `seed`.
fn varied_value(seed: usize, length: usize) -> Vec<u8> {
    let palette: Vec<u8> = (0x20..=0x7e).chain(0x80..=0xff).chain([b'\t']).collect();
    let mut value: Vec<u8> = (0..length)
        .map(|position| palette[(seed * 7919 + position * 104_729) % palette.len()])
        .collect();
    // No whitespace at the ends, which HTTP would not keep.
    if let Some(first) = value.first_mut() {
        *first = b'a';
    }
    if let Some(last) = value.last_mut() {
        *last = b'z';
    }
    value
}

/// The headers of request `index`: some repeated (so the client's encoder refers to its
/// dynamic table), some varied, some large (so that it evicts), one sensitive (sent never
/// indexed), and for one request a block too large for one frame.
fn request_headers(index: usize) -> HeaderList {
    let mut headers = vec![
        (
            "content-type".to_string(),
            b"application/grpc".to_vec(),
            false,
        ),
        (
            "x-repeated".to_string(),
            b"the same every time".to_vec(),
            false,
        ),
        (
            format!("x-varied-{}", index % 5),
            varied_value(index, 40),
            false,
        ),
        ("x-every-byte".to_string(), varied_value(index, 200), false),
        (
            "authorization".to_string(),
            format!("secret {index}").into_bytes(),
            true,
        ),
    ];
    if index % 7 == 3 {
        headers.push(("x-large".to_string(), varied_value(index, 3000), false));
    }
    if index == 50 {
        for part in 0..3 {
            headers.push((format!("x-huge-{part}"), varied_value(part, 7000), false));
        }
    }
    headers
}

/// Everything h2's own client sends arrives unchanged: headers (through its dynamic table,
/// Huffman coding, evictions and never-indexed fields), blocks split over CONTINUATION
/// frames, and bodies of every size; both as blocks are forwarded before any repair and as
/// they are re-encoded after one, which is what puts the HPACK decoder to the test.
#[tokio::test]
async fn what_h2s_client_sends_arrives_unchanged() {
    for re_encoding in [false, true] {
        h2_client_through_the_wrapper(re_encoding).await;
    }
}

async fn h2_client_through_the_wrapper(re_encoding: bool) {
    let requests_total = 120;
    let (client_connection, server_connection) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve_h2(server_connection, re_encoding));
    let client = async move {
        let (mut client, connection) = h2::client::handshake(client_connection)
            .await
            .expect("the client's handshake");
        let connection = tokio::spawn(connection);
        for index in 0..requests_total {
            let mut request = http::Request::builder().method("POST").uri(format!(
                "http://127.0.0.1:2379/etcdserverpb.KV/Range{index}"
            ));
            for (name, value, sensitive) in request_headers(index) {
                let mut value = http::HeaderValue::from_bytes(&value).expect("a header value");
                value.set_sensitive(sensitive);
                request = request.header(name, value);
            }
            client = client.ready().await.expect("ready");
            let (response, mut body) = client
                .send_request(request.body(()).expect("a request"), false)
                .expect("sent");
            let length = [0, 10, 40_000][index % 3];
            body.send_data(Bytes::from(varied_value(index, length)), true)
                .expect("the body");
            let response = response.await.expect("a response");
            assert_eq!(response.status(), 200);
        }
        drop(client);
        let _ = connection.await;
    };
    tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the client finishes");
    let requests = tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .expect("the server ends")
        .expect("the server task");
    assert_eq!(requests.len(), requests_total);
    for (index, (authority, path, headers, body)) in requests.into_iter().enumerate() {
        assert_eq!(authority.as_deref(), Some("127.0.0.1:2379"));
        assert_eq!(path, format!("/etcdserverpb.KV/Range{index}"));
        let mut expected: HeaderList = request_headers(index)
            .into_iter()
            .map(|(name, value, _)| (name, value, false))
            .collect();
        let mut headers = headers;
        expected.sort();
        headers.sort();
        let names = |list: &HeaderList| -> Vec<String> {
            list.iter().map(|(name, _, _)| name.clone()).collect()
        };
        let what = format!("request {index}, re-encoding {re_encoding}");
        assert_eq!(names(&headers), names(&expected), "{what}");
        for (received, sent) in headers.iter().zip(&expected) {
            // Not the values themselves: some are kilobytes long.
            assert!(received == sent, "{what}: {} differs", sent.0);
        }
        assert_eq!(body, varied_value(index, [0, 10, 40_000][index % 3]));
    }
}
