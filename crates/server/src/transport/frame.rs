//! Length-prefixed frames: a 5-byte header (body length as a big-endian u32, then the frame
//! kind as one byte) followed by a protobuf body. See the module documentation of
//! `crate::transport` for the connection protocol built on them.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The bytes of a frame header: the body length (u32, big-endian) and the kind (u8).
pub(crate) const FRAME_HEADER_BYTES: usize = 5;

/// What a frame's body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// `raftpb.Handshake`, the first frame from the node that opened the connection.
    Handshake = 1,
    /// `raftpb.HandshakeReply`, the receiver's answer.
    HandshakeReply = 2,
    /// `raftpb.MessageBatch`.
    MessageBatch = 3,
    /// `raftpb.SnapshotChunk`.
    SnapshotChunk = 4,
    /// `raftpb.SnapshotReceived`, the receiver's acknowledgement of a whole snapshot.
    SnapshotReceived = 5,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Handshake),
            2 => Some(FrameKind::HandshakeReply),
            3 => Some(FrameKind::MessageBatch),
            4 => Some(FrameKind::SnapshotChunk),
            5 => Some(FrameKind::SnapshotReceived),
            _ => None,
        }
    }
}

/// A frame as read: its kind and its body, not yet decoded.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: FrameKind,
    pub(crate) body: Bytes,
}

/// Why a frame could not be read or written. Any of these ends the connection.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The header announced a body larger than the configured maximum.
    #[error("frame body of {body_bytes} bytes exceeds the maximum of {frame_bytes_max} bytes")]
    TooLarge {
        /// The announced (or, when writing, the encoded) body length.
        body_bytes: u64,
        /// The configured maximum.
        frame_bytes_max: u32,
    },
    /// The header named a kind this version does not know.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The body is not valid protobuf for its kind.
    #[error("frame body does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Reading from the socket failed.
    #[error("reading from the connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends one frame of `kind` holding `body` to `buffer`.
pub(crate) fn encode_frame(
    kind: FrameKind,
    body: &impl prost::Message,
    frame_bytes_max: u32,
    buffer: &mut BytesMut,
) -> Result<(), FrameError> {
    let body_bytes = body.encoded_len();
    if body_bytes > frame_bytes_max as usize {
        return Err(FrameError::TooLarge {
            body_bytes: body_bytes as u64,
            frame_bytes_max,
        });
    }
    buffer.reserve(FRAME_HEADER_BYTES + body_bytes);
    // The check above keeps the length within u32, since frame_bytes_max is a u32.
    buffer.put_u32(body_bytes as u32);
    buffer.put_u8(kind as u8);
    body.encode(buffer)
        .expect("the buffer was reserved for the whole body");
    Ok(())
}

/// Reads one frame. Returns `None` if the connection ended cleanly between frames.
///
/// The body length is checked against `frame_bytes_max` before anything is allocated, so a
/// peer cannot make this node reserve more than one maximal frame per connection.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    frame_bytes_max: u32,
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let read = reader.read(&mut header[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += read;
    }
    let body_bytes = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if body_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge {
            body_bytes: u64::from(body_bytes),
            frame_bytes_max,
        });
    }
    let kind =
        FrameKind::from_byte(header[4]).ok_or(FrameError::UnknownKind { kind: header[4] })?;
    let mut body = BytesMut::zeroed(body_bytes as usize);
    reader.read_exact(&mut body).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(error)
        }
    })?;
    Ok(Some(Frame {
        kind,
        body: body.freeze(),
    }))
}

/// Decodes a frame body as `T`. The body is a `Bytes`, so `bytes` fields of `T` share it.
pub(crate) fn decode_body<T: prost::Message + Default>(body: Bytes) -> Result<T, FrameError> {
    Ok(T::decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raftpb as pb;
    use prost::Message as _;

    #[tokio::test]
    async fn a_frame_reads_back_as_written() {
        let reply = pb::HandshakeReply {
            accepted: false,
            reason: "another cluster".to_string(),
        };
        let mut buffer = BytesMut::new();
        encode_frame(FrameKind::HandshakeReply, &reply, 1024, &mut buffer).unwrap();
        assert_eq!(buffer.len(), FRAME_HEADER_BYTES + reply.encoded_len());
        let mut reader = &buffer[..];
        let frame = read_frame(&mut reader, 1024).await.unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::HandshakeReply);
        assert_eq!(
            decode_body::<pb::HandshakeReply>(frame.body).unwrap(),
            reply
        );
        assert!(read_frame(&mut reader, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused_before_reading_the_body() {
        let mut header = Vec::new();
        header.extend_from_slice(&1025u32.to_be_bytes());
        header.push(FrameKind::MessageBatch as u8);
        let mut reader = &header[..];
        let error = read_frame(&mut reader, 1024).await.unwrap_err();
        assert!(matches!(
            error,
            FrameError::TooLarge {
                body_bytes: 1025,
                frame_bytes_max: 1024
            }
        ));
    }

    #[tokio::test]
    async fn unknown_kind_and_truncation_are_errors() {
        let mut reader = &[0u8, 0, 0, 0, 77][..];
        let error = read_frame(&mut reader, 1024).await.unwrap_err();
        assert!(matches!(error, FrameError::UnknownKind { kind: 77 }));
        let mut reader = &[0u8, 0][..];
        let error = read_frame(&mut reader, 1024).await.unwrap_err();
        assert!(matches!(error, FrameError::Truncated));
        let mut reader = &[0u8, 0, 0, 9, 3, 1, 2][..];
        let error = read_frame(&mut reader, 1024).await.unwrap_err();
        assert!(matches!(error, FrameError::Truncated));
    }

    #[test]
    fn an_oversized_body_is_not_encoded() {
        let batch = pb::HandshakeReply {
            accepted: true,
            reason: "x".repeat(2000),
        };
        let mut buffer = BytesMut::new();
        let error = encode_frame(FrameKind::HandshakeReply, &batch, 1024, &mut buffer).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { .. }));
        assert!(buffer.is_empty());
    }
}
