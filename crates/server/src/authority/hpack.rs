//! HPACK (RFC 7541), as much as [`super`] needs: a decoder that follows a client's encoder,
//! dynamic table included, and an encoder of plain literals that never touches the receiver's
//! dynamic table.
//!
//! Rationale for that pair: a header block cannot be edited in place, since its entries refer
//! to a table both ends build up from every block before it. Re-encoding each block with
//! literals that are never indexed leaves h2's table empty for the whole connection, so what
//! h2 decodes depends on nothing but the block in hand, whatever was edited before.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::huffman::{self, HuffmanError};

/// The dynamic table size a client's encoder may use: the protocol's default, 4096 bytes.
/// Rationale: a server that sends no SETTINGS_HEADER_TABLE_SIZE keeps the default, and
/// Flotilla's (tonic over hyper over h2) sends none; a client that asks for more is in error,
/// as h2 would say.
pub const DYNAMIC_TABLE_BYTES_MAX: usize = 4096;

/// What each entry costs in the dynamic table beyond its name and value (RFC 7541, 4.1).
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The static table (RFC 7541, Appendix A): index 1 is the first entry.
#[rustfmt::skip]
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
];

/// One decoded header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its name, as sent (HTTP/2 requires lower case; h2 checks that, not this module).
    pub name: Bytes,
    /// Its value.
    pub value: Bytes,
    /// Sent as "never indexed": an intermediary must keep it so (RFC 7541, 7.1.3).
    pub never_indexed: bool,
}

/// Why a header block could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The block ends inside a representation.
    #[error("a header block ends inside a header field")]
    Truncated,
    /// An integer does not fit the sizes HPACK allows here.
    #[error("an HPACK integer is too large")]
    IntegerTooLarge,
    /// An index refers to no entry of either table.
    #[error("HPACK index {0} refers to no table entry")]
    BadIndex(usize),
    /// A dynamic table size update is above the allowed size, or after a header field.
    #[error("a bad dynamic table size update to {0} bytes")]
    BadTableSizeUpdate(usize),
    /// A Huffman-encoded string is malformed.
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
    /// The decoded header list is larger than the caller allows.
    #[error("the decoded header list is larger than {0} bytes")]
    ListTooLarge(usize),
}

/// The receiving side of a connection's header compression: decodes each header block in
/// the order the encoder sent them, keeping the dynamic table as the encoder keeps it.
pub struct Decoder {
    /// Newest entry first, so that index 62 is the front.
    entries: VecDeque<(Bytes, Bytes)>,
    /// The sum of the entries' sizes (each its name, value and [`ENTRY_OVERHEAD_BYTES`]).
    size_bytes: usize,
    /// The size the encoder last set, at most [`DYNAMIC_TABLE_BYTES_MAX`].
    max_size_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder for a new connection: an empty table of the protocol's default size.
    pub fn new() -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size_bytes: 0,
            max_size_bytes: DYNAMIC_TABLE_BYTES_MAX,
        }
    }

    /// Decodes one complete header block. `list_bytes_max` bounds the decoded list, counted
    /// as HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE counts it: a few bytes of block can stand for
    /// kilobytes of table entries, and memory must not follow a client's choice. After an
    /// error the decoder's state is undefined: the connection cannot go on being decoded.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        list_bytes_max: usize,
    ) -> Result<Vec<Header>, DecodeError> {
        let mut headers = Vec::new();
        let mut list_bytes = 0usize;
        while let Some(&first) = block.first() {
            let header = if first & 0x80 != 0 {
                // Indexed header field.
                let index = decode_integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                Header {
                    name,
                    value,
                    never_indexed: false,
                }
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                let (name, value) = self.literal(&mut block, 6)?;
                self.insert(name.clone(), value.clone());
                Header {
                    name,
                    value,
                    never_indexed: false,
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the block's first header field.
                let size_bytes = decode_integer(&mut block, 5)?;
                if !headers.is_empty() || size_bytes > DYNAMIC_TABLE_BYTES_MAX {
                    return Err(DecodeError::BadTableSizeUpdate(size_bytes));
                }
                self.max_size_bytes = size_bytes;
                self.evict_to(size_bytes);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let never_indexed = first & 0xf0 == 0x10;
                let (name, value) = self.literal(&mut block, 4)?;
                Header {
                    name,
                    value,
                    never_indexed,
                }
            };
            list_bytes = list_bytes
                .saturating_add(header.name.len() + header.value.len() + ENTRY_OVERHEAD_BYTES);
            if list_bytes > list_bytes_max {
                return Err(DecodeError::ListTooLarge(list_bytes_max));
            }
            headers.push(header);
        }
        Ok(headers)
    }

    /// The entry at `index`: static entries first, then the dynamic table, newest first.
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), DecodeError> {
        match index {
            0 => Err(DecodeError::BadIndex(0)),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((
                    Bytes::from_static(name.as_bytes()),
                    Bytes::from_static(value.as_bytes()),
                ))
            }
            _ => self
                .entries
                .get(index - 62)
                .cloned()
                .ok_or(DecodeError::BadIndex(index)),
        }
    }

    /// A literal's name (indexed with a `prefix_bits` prefix, or a string when the index is
    /// 0) and value.
    fn literal(&self, block: &mut &[u8], prefix_bits: u8) -> Result<(Bytes, Bytes), DecodeError> {
        let name_index = decode_integer(block, prefix_bits)?;
        let name = if name_index == 0 {
            decode_string(block)?
        } else {
            self.entry(name_index)?.0
        };
        let value = decode_string(block)?;
        Ok((name, value))
    }

    /// Adds an entry, evicting the oldest ones to make room (RFC 7541, 4.4): an entry larger
    /// than the whole table empties it and is not added.
    fn insert(&mut self, name: Bytes, value: Bytes) {
        let entry_bytes = name.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        if entry_bytes > self.max_size_bytes {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size_bytes - entry_bytes);
        self.entries.push_front((name, value));
        self.size_bytes += entry_bytes;
    }

    /// Evicts the oldest entries until the table holds at most `size_bytes`.
    fn evict_to(&mut self, size_bytes: usize) {
        while self.size_bytes > size_bytes {
            let (name, value) = self
                .entries
                .pop_back()
                .expect("a table over size has entries");
            self.size_bytes -= name.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        }
    }
}

/// The largest integer accepted: ample for any index, length or table size here (a string
/// cannot be longer than its block), and far from overflowing.
const INTEGER_MAX: usize = 1 << 28;

/// Decodes an integer with an N-bit prefix (RFC 7541, 5.1), consuming it from `block`.
fn decode_integer(block: &mut &[u8], prefix_bits: u8) -> Result<usize, DecodeError> {
    let (&first, rest) = block.split_first().ok_or(DecodeError::Truncated)?;
    *block = rest;
    let prefix_max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & prefix_max;
    if value < prefix_max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&byte, rest) = block.split_first().ok_or(DecodeError::Truncated)?;
        *block = rest;
        value += usize::from(byte & 0x7f) << shift;
        if value > INTEGER_MAX {
            return Err(DecodeError::IntegerTooLarge);
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Decodes a string literal (RFC 7541, 5.2), Huffman-encoded or not.
fn decode_string(block: &mut &[u8]) -> Result<Bytes, DecodeError> {
    let huffman_encoded = block.first().ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let length = decode_integer(block, 7)?;
    if length > block.len() {
        return Err(DecodeError::Truncated);
    }
    let (encoded, rest) = block.split_at(length);
    *block = rest;
    if huffman_encoded {
        let mut decoded = Vec::with_capacity(length * 8 / 5 + 1);
        huffman::decode(encoded, &mut decoded)?;
        Ok(Bytes::from(decoded))
    } else {
        Ok(Bytes::copy_from_slice(encoded))
    }
}

/// Encodes `headers` as a header block of literals with literal names and plain (not
/// Huffman-encoded) strings, none indexed: the receiver's dynamic table is left as it was.
/// A field sent as never indexed stays so.
pub fn encode_literals(headers: &[Header], block: &mut BytesMut) {
    for header in headers {
        // Literal never indexed (0001) or without indexing (0000), with a new name.
        block.put_u8(if header.never_indexed { 0x10 } else { 0x00 });
        encode_string(&header.name, block);
        encode_string(&header.value, block);
    }
}

/// A plain string literal: its length with a 7-bit prefix and the H bit clear, then its bytes.
fn encode_string(text: &[u8], block: &mut BytesMut) {
    encode_integer(text.len(), 7, 0x00, block);
    block.put_slice(text);
}

/// Encodes `value` with an N-bit prefix, the first byte's other bits being `flags`.
fn encode_integer(mut value: usize, prefix_bits: u8, flags: u8, block: &mut BytesMut) {
    let prefix_max = (1usize << prefix_bits) - 1;
    if value < prefix_max {
        block.put_u8(flags | value as u8);
        return;
    }
    block.put_u8(flags | prefix_max as u8);
    value -= prefix_max;
    while value >= 0x80 {
        block.put_u8((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    block.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST_BYTES_MAX: usize = 64 * 1024;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|byte| byte.is_ascii_hexdigit())
            .collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn pairs(headers: &[Header]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|header| {
                (
                    String::from_utf8(header.name.to_vec()).unwrap(),
                    String::from_utf8(header.value.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn owned(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// RFC 7541, C.4: three requests with Huffman coding, sharing one dynamic table.
    #[test]
    fn decodes_the_rfc_request_examples_in_sequence() {
        let mut decoder = Decoder::new();
        let first = decoder
            .decode(
                &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
                LIST_BYTES_MAX,
            )
            .unwrap();
        assert_eq!(
            pairs(&first),
            owned(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(decoder.size_bytes, 57);
        let second = decoder
            .decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), LIST_BYTES_MAX)
            .unwrap();
        assert_eq!(
            pairs(&second),
            owned(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!(decoder.size_bytes, 110);
        let third = decoder
            .decode(
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
                LIST_BYTES_MAX,
            )
            .unwrap();
        assert_eq!(
            pairs(&third),
            owned(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.size_bytes, 164);
    }

    /// RFC 7541, C.5: responses in a 256-byte table, which evicts the oldest entries.
    #[test]
    fn evicts_the_oldest_entries_as_the_rfc_response_examples_do() {
        let mut decoder = Decoder::new();
        // A size update to 256 bytes, then the first response (C.5.1).
        let mut block = vec![0x3f, 0xe1, 0x01];
        block.extend(hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
        ));
        let first = decoder.decode(&block, LIST_BYTES_MAX).unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(decoder.size_bytes, 222);
        // C.5.2: ":status: 307" evicts ":status: 302".
        let second = decoder
            .decode(&hex("4803 3330 37c1 c0bf"), LIST_BYTES_MAX)
            .unwrap();
        assert_eq!(
            pairs(&second),
            owned(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(decoder.size_bytes, 222);
        assert_eq!(decoder.entries.len(), 4);
    }

    #[test]
    fn literals_round_trip_without_touching_a_table() {
        let headers = vec![
            Header {
                name: Bytes::from_static(b":path"),
                value: Bytes::from(vec![b'/'; 300]),
                never_indexed: false,
            },
            Header {
                name: Bytes::from_static(b"authorization"),
                value: Bytes::from_static(b"secret"),
                never_indexed: true,
            },
            Header {
                name: Bytes::from_static(b"empty"),
                value: Bytes::new(),
                never_indexed: false,
            },
        ];
        let mut block = BytesMut::new();
        encode_literals(&headers, &mut block);
        let mut decoder = Decoder::new();
        assert_eq!(decoder.decode(&block, LIST_BYTES_MAX).unwrap(), headers);
        assert!(decoder.entries.is_empty());
    }

    #[test]
    fn refuses_malformed_blocks() {
        let cases: [(&[u8], DecodeError); 6] = [
            (&[0x80], DecodeError::BadIndex(0)),
            (&[0xbe], DecodeError::BadIndex(62)),
            (&[0x40, 0x03, b'a'], DecodeError::Truncated),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                DecodeError::IntegerTooLarge,
            ),
            (&[0x3f, 0xe2, 0x1f], DecodeError::BadTableSizeUpdate(4097)),
            (&[0x82, 0x20], DecodeError::BadTableSizeUpdate(0)),
        ];
        for (block, expected) in cases {
            assert_eq!(
                Decoder::new().decode(block, LIST_BYTES_MAX),
                Err(expected),
                "{block:?}"
            );
        }
    }

    #[test]
    fn bounds_the_decoded_list() {
        let mut decoder = Decoder::new();
        // One entry of 1000 bytes, then many one-byte references to it.
        let mut block = BytesMut::new();
        block.put_u8(0x40);
        encode_string(b"x", &mut block);
        encode_string(&[b'v'; 1000], &mut block);
        block.put_slice(&[0xbe; 100]);
        assert_eq!(
            decoder.decode(&block, 64 * 1024),
            Err(DecodeError::ListTooLarge(64 * 1024))
        );
    }
}
