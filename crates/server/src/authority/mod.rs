//! Client connections whose requests' `:authority` h2 would refuse are repaired before h2
//! reads them, so that etcd's clients that send one are served as etcd serves them.
//!
//! etcdctl 3.4's commands that dial each endpoint on its own (`endpoint status`, `endpoint
//! hashkv`), given an endpoint with a scheme (`--endpoints=http://127.0.0.1:2379`, as etcd's
//! documentation writes them), send it whole as the HTTP/2 `:authority` pseudo-header. That
//! is not an authority (`host:port`), and h2, under hyper and tonic, resets such a stream with
//! PROTOCOL_ERROR before any Flotilla code sees the request
//! (`h2::server::Peer::convert_poll_message`, which no option of h2, hyper or tonic changes;
//! h2's maintainers declined to relax it in hyperium/h2#525). etcd 3.4 serves these requests.
//!
//! [`TolerantAuthority`] sits between the TCP stream and h2. It forwards the client's bytes
//! unchanged except for header blocks: it decodes each one (HPACK, with the client's dynamic
//! table, in `hpack.rs`) and repairs an unacceptable `:authority` ([`repaired_authority`]).
//! From the first repair on, it re-encodes every block of the connection as literals that
//! leave h2's dynamic table as it was, so that no edit can desynchronise the two ends; until
//! then blocks go as they came. What it does not understand it hands to h2 unchanged from then on,
//! and h2 answers the client as it would have without it. Bytes from the server to the
//! client pass through untouched.

mod hpack;
mod huffman;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;

use hpack::{Decoder, Header};

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const CONNECTION_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The length of a frame header.
const FRAME_HEADER_BYTES: usize = 9;

/// Frame types and flags this module reads (RFC 9113, 6).
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The largest frame written to h2: the smallest SETTINGS_MAX_FRAME_SIZE a server may
/// advertise, so h2 accepts it whatever it advertises.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;

/// The largest header block, as received, that is decoded; a larger one goes to h2 as it
/// came (see the module's documentation). Rationale: four times hyper's default limit on a
/// decoded header list (16 KiB), so any request h2 would accept fits, and a client cannot
/// make a connection hold more.
const HEADER_BLOCK_BYTES_MAX: usize = 64 * 1024;

/// The largest decoded header list, counted as SETTINGS_MAX_HEADER_LIST_SIZE counts it; a
/// larger one goes to h2 as it came, for the reason of [`HEADER_BLOCK_BYTES_MAX`].
const HEADER_LIST_BYTES_MAX: usize = 64 * 1024;

/// How much is read from the socket at a time when bytes must be looked at.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The `:authority` to give h2 in place of `value`: None to keep it as it is; Some(None) to
/// drop it, when nothing acceptable can be made of it; Some(Some(authority)) to replace it.
///
/// A valid authority stays. A URL (`http://host:port`, `https://host:port/`, as etcdctl 3.4
/// sends) becomes its authority. Anything else is dropped: a request without `:authority` is
/// valid HTTP/2, and Flotilla's services route on the path alone, as etcd's do.
pub fn repaired_authority(value: &[u8]) -> Option<Option<Vec<u8>>> {
    if Authority::try_from(value).is_ok() {
        return None;
    }
    let without_scheme = [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        let prefix = value.get(..scheme.len())?;
        prefix
            .eq_ignore_ascii_case(scheme)
            .then(|| &value[scheme.len()..])
    });
    let Some(without_scheme) = without_scheme else {
        return Some(None);
    };
    let authority_end = without_scheme
        .iter()
        .position(|&byte| byte == b'/')
        .unwrap_or(without_scheme.len());
    let candidate = &without_scheme[..authority_end];
    if !candidate.is_empty() && Authority::try_from(candidate).is_ok() {
        Some(Some(candidate.to_vec()))
    } else {
        Some(None)
    }
}

/// Repairs the `:authority` among `headers` (see [`repaired_authority`]). True when it
/// changed anything.
fn repair_authority(headers: &mut Vec<Header>) -> bool {
    let Some(position) = headers
        .iter()
        .position(|header| header.name.as_ref() == b":authority")
    else {
        return false;
    };
    match repaired_authority(&headers[position].value) {
        None => false,
        Some(None) => {
            headers.remove(position);
            true
        }
        Some(Some(authority)) => {
            headers[position].value = authority.into();
            true
        }
    }
}

/// Where the client's byte stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the end of the connection preface.
    Preface,
    /// At the start of a frame.
    FrameHeader,
    /// Inside the payload of a frame that is forwarded as it is, this many bytes from its end.
    Forwarding(usize),
    /// Everything from here on is forwarded as it is: the stream is not HTTP/2 as this module
    /// understands it, and h2 is left to answer it.
    Passthrough,
}

/// A header block being received: a HEADERS frame and the CONTINUATION frames after it.
struct PendingBlock {
    /// Its stream.
    stream_id: u32,
    /// The HEADERS frame's END_STREAM and PRIORITY flags.
    flags: u8,
    /// The HEADERS frame's priority fields, when it has the PRIORITY flag.
    priority: Option<[u8; 5]>,
    /// The header block so far.
    fragment: BytesMut,
    /// The frames as they came, to hand to h2 unchanged if the block is not decoded.
    raw: BytesMut,
}

/// The client-to-server half of a connection: turns the bytes read from the client into the
/// bytes h2 reads.
struct Rewriter {
    state: State,
    /// Bytes from the client not yet looked at.
    input: BytesMut,
    /// Bytes ready for h2.
    output: BytesMut,
    /// Follows the client's header compression, to read every block.
    decoder: Decoder,
    pending: Option<PendingBlock>,
    /// A block has been edited on this connection. Until then every block goes to h2 as it
    /// came, and h2's dynamic table is the client's; from then on every block is re-encoded,
    /// since h2's table no longer matches what the client's blocks refer to. Rationale: most
    /// clients send valid authorities, and their requests then cost a decode, not a re-encode
    /// that h2 must parse again as literals.
    edited: bool,
}

impl Rewriter {
    fn new() -> Rewriter {
        Rewriter {
            state: State::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: Decoder::new(),
            pending: None,
            edited: false,
        }
    }

    /// Moves what can be handled of `input` to `output`.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Passthrough => {
                    let rest = self.input.split();
                    self.output.unsplit(rest);
                    return;
                }
                State::Preface => {
                    let seen = self.input.len().min(CONNECTION_PREFACE.len());
                    if self.input[..seen] != CONNECTION_PREFACE[..seen] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if seen < CONNECTION_PREFACE.len() {
                        return;
                    }
                    let preface = self.input.split_to(CONNECTION_PREFACE.len());
                    self.output.unsplit(preface);
                    self.state = State::FrameHeader;
                }
                State::Forwarding(remaining) => {
                    let taken = remaining.min(self.input.len());
                    let payload = self.input.split_to(taken);
                    self.output.unsplit(payload);
                    self.consumed(taken);
                    if self.input.is_empty() {
                        return;
                    }
                }
                State::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_BYTES {
                        return;
                    }
                    if !self.frame() {
                        return;
                    }
                }
            }
        }
    }

    /// Handles the frame at the start of `input`, whose header is there. False when more
    /// bytes are needed first.
    fn frame(&mut self) -> bool {
        let header = &self.input[..FRAME_HEADER_BYTES];
        let length =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let frame_type = header[3];
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let in_block = self.pending.is_some();
        let continues_block = frame_type == FRAME_CONTINUATION
            && self
                .pending
                .as_ref()
                .is_some_and(|pending| pending.stream_id == stream_id);
        if in_block && !continues_block || !in_block && frame_type == FRAME_CONTINUATION {
            // A protocol error h2 reports (RFC 9113, 6.10).
            self.pass_through();
            return true;
        }
        if frame_type == FRAME_PUSH_PROMISE {
            // A client must not send one, and its header block would change the table.
            self.pass_through();
            return true;
        }
        if frame_type != FRAME_HEADERS && frame_type != FRAME_CONTINUATION {
            let frame_header = self.input.split_to(FRAME_HEADER_BYTES);
            self.output.unsplit(frame_header);
            self.state = State::Forwarding(length);
            self.consumed(0);
            return true;
        }
        let held_bytes = self.pending.as_ref().map_or(0, |pending| pending.raw.len());
        if held_bytes + FRAME_HEADER_BYTES + length > HEADER_BLOCK_BYTES_MAX {
            self.pass_through();
            return true;
        }
        if self.input.len() < FRAME_HEADER_BYTES + length {
            return false;
        }
        let frame = self.input.split_to(FRAME_HEADER_BYTES + length);
        if frame_type == FRAME_HEADERS {
            self.start_block(frame, stream_id);
        } else {
            self.continue_block(frame);
        }
        true
    }

    /// Starts a header block with a HEADERS frame.
    fn start_block(&mut self, frame: BytesMut, stream_id: u32) {
        let flags = frame[4];
        let mut payload = &frame[FRAME_HEADER_BYTES..];
        let mut padding = 0;
        if flags & FLAG_PADDED != 0 {
            let Some((&pad_length, rest)) = payload.split_first() else {
                return self.pass_through_with(frame);
            };
            padding = usize::from(pad_length);
            payload = rest;
        }
        let mut priority = None;
        if flags & FLAG_PRIORITY != 0 {
            let Some(fields) = payload.get(..5) else {
                return self.pass_through_with(frame);
            };
            priority = Some(<[u8; 5]>::try_from(fields).expect("five bytes"));
            payload = &payload[5..];
        }
        let Some(fragment_length) = payload.len().checked_sub(padding) else {
            return self.pass_through_with(frame);
        };
        let fragment = BytesMut::from(&payload[..fragment_length]);
        self.pending = Some(PendingBlock {
            stream_id,
            flags: flags & (FLAG_END_STREAM | FLAG_PRIORITY),
            priority,
            fragment,
            raw: frame,
        });
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block();
        }
    }

    /// Adds a CONTINUATION frame to the pending block.
    fn continue_block(&mut self, frame: BytesMut) {
        let flags = frame[4];
        let pending = self
            .pending
            .as_mut()
            .expect("a continuation continues a block");
        pending.fragment.put_slice(&frame[FRAME_HEADER_BYTES..]);
        pending.raw.unsplit(frame);
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block();
        }
    }

    /// Decodes the complete pending block, repairs it and writes it out re-encoded.
    fn finish_block(&mut self) {
        let pending = self.pending.take().expect("a block to finish");
        let mut headers = match self
            .decoder
            .decode(&pending.fragment, HEADER_LIST_BYTES_MAX)
        {
            Ok(headers) => headers,
            Err(error) => {
                tracing::debug!("a client's header block is passed to h2 undecoded: {error}");
                return self.pass_through_with(pending.raw);
            }
        };
        if repair_authority(&mut headers) {
            tracing::debug!("repaired a client's :authority that h2 would refuse");
            self.edited = true;
        }
        if !self.edited {
            // h2's table is still the client's: the frames can go as they came.
            self.output.unsplit(pending.raw);
            return;
        }
        let mut block = BytesMut::new();
        hpack::encode_literals(&headers, &mut block);
        self.write_block(&pending, block);
    }

    /// Writes `block` as a HEADERS frame with the pending block's flags and priority, and as
    /// many CONTINUATION frames as it takes.
    fn write_block(&mut self, pending: &PendingBlock, mut block: BytesMut) {
        let priority_bytes = pending.priority.map_or(0, |fields| fields.len());
        let first_length = block.len().min(FRAME_PAYLOAD_BYTES_MAX - priority_bytes);
        let mut flags = pending.flags;
        if first_length == block.len() {
            flags |= FLAG_END_HEADERS;
        }
        self.write_frame_header(first_length + priority_bytes, FRAME_HEADERS, flags, pending);
        if let Some(fields) = pending.priority {
            self.output.put_slice(&fields);
        }
        self.output.put_slice(&block[..first_length]);
        block.advance(first_length);
        while !block.is_empty() {
            let length = block.len().min(FRAME_PAYLOAD_BYTES_MAX);
            let flags = if length == block.len() {
                FLAG_END_HEADERS
            } else {
                0
            };
            self.write_frame_header(length, FRAME_CONTINUATION, flags, pending);
            self.output.put_slice(&block[..length]);
            block.advance(length);
        }
    }

    fn write_frame_header(
        &mut self,
        length: usize,
        frame_type: u8,
        flags: u8,
        pending: &PendingBlock,
    ) {
        let length = u32::try_from(length).expect("a frame of at most 16 KiB");
        self.output.put_slice(&length.to_be_bytes()[1..]);
        self.output.put_u8(frame_type);
        self.output.put_u8(flags);
        self.output.put_u32(pending.stream_id);
    }

    /// Forwards `frames` and everything after them as they are, from now on.
    fn pass_through_with(&mut self, frames: BytesMut) {
        self.output.unsplit(frames);
        self.pass_through();
    }

    /// Forwards any pending block and everything after it as they are, from now on.
    fn pass_through(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.output.unsplit(pending.raw);
        }
        self.state = State::Passthrough;
    }

    /// Accounts for `bytes` of a forwarded payload having gone to h2.
    fn consumed(&mut self, bytes: usize) {
        if let State::Forwarding(remaining) = self.state {
            let remaining = remaining - bytes;
            self.state = if remaining == 0 {
                State::FrameHeader
            } else {
                State::Forwarding(remaining)
            };
        }
    }

    /// The client closed its side: whatever is held goes to h2 as it came, which then sees
    /// the same truncated stream the client sent.
    fn finish(&mut self) {
        self.pass_through();
        self.process();
    }

    /// How many bytes may be read from the client straight into h2's buffer, skipping this
    /// module's own: payload bytes to forward, when nothing is waiting before them.
    fn direct_read_limit(&self) -> Option<usize> {
        if !self.input.is_empty() || !self.output.is_empty() {
            return None;
        }
        match self.state {
            State::Passthrough => Some(usize::MAX),
            State::Forwarding(remaining) => Some(remaining),
            State::Preface | State::FrameHeader => None,
        }
    }
}

/// A client connection as h2 should read it: see the module's documentation. Writes go to
/// the connection unchanged.
pub struct TolerantAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    /// A buffer for reads that must be looked at before h2 gets them.
    chunk: Vec<u8>,
    /// The client has closed its side.
    end_of_stream: bool,
}

impl<S> TolerantAuthority<S> {
    /// Wraps a newly accepted client connection, before anything has been read from it.
    pub fn new(inner: S) -> TolerantAuthority<S> {
        TolerantAuthority {
            inner,
            rewriter: Rewriter::new(),
            chunk: Vec::new(),
            end_of_stream: false,
        }
    }
}

#[cfg(test)]
impl<S> TolerantAuthority<S> {
    /// As [`TolerantAuthority::new`], re-encoding every block as if the first had been
    /// repaired: for tests of that path with clients whose authorities need no repair.
    fn re_encoding_every_block(inner: S) -> TolerantAuthority<S> {
        let mut connection = TolerantAuthority::new(inner);
        connection.rewriter.edited = true;
        connection
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TolerantAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let output = &mut this.rewriter.output;
            if !output.is_empty() {
                let length = output.len().min(buffer.remaining());
                buffer.put_slice(&output[..length]);
                output.advance(length);
                return Poll::Ready(Ok(()));
            }
            if this.end_of_stream {
                return Poll::Ready(Ok(()));
            }
            // Payload bytes go straight to h2 when the whole read is theirs.
            if this
                .rewriter
                .direct_read_limit()
                .is_some_and(|limit| limit >= buffer.remaining())
            {
                let before = buffer.filled().len();
                std::task::ready!(Pin::new(&mut this.inner).poll_read(context, buffer))?;
                let read = buffer.filled().len() - before;
                if read == 0 {
                    this.end_of_stream = true;
                }
                this.rewriter.consumed(read);
                return Poll::Ready(Ok(()));
            }
            this.chunk.resize(READ_CHUNK_BYTES, 0);
            let mut chunk = ReadBuf::new(&mut this.chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(context, &mut chunk))?;
            if chunk.filled().is_empty() {
                this.end_of_stream = true;
                this.rewriter.finish();
            } else {
                this.rewriter.input.put_slice(chunk.filled());
                this.rewriter.process();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TolerantAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for TolerantAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
