//! HPACK's Huffman code (RFC 7541, Appendix B), decoding only: header strings arrive encoded
//! with it, and [`super::hpack`] re-encodes them as plain literals.
//!
//! The code is canonical: within each code length the codes are consecutive and ordered by
//! symbol, and each length starts where the shorter one ended, shifted left. So the code
//! lengths alone define it, and [`CODE_LENGTHS`] is the whole table.

/// The end-of-string symbol: never valid inside a string; its first bits are the padding.
const END_OF_STRING: usize = 256;

/// The longest code, in bits (the end-of-string symbol's and three control characters').
const CODE_LENGTH_MAX: usize = 30;

/// The code length in bits of each symbol: the 256 byte values, then end-of-string.
#[rustfmt::skip]
const CODE_LENGTHS: [u8; 257] = [
    // 0x00..=0x1f: control characters.
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    // @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    // P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    // ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    // p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    // 0x80..=0xff.
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // End of string.
    30,
];

/// Why a Huffman-encoded string could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The end-of-string symbol appeared inside the string.
    #[error("the end-of-string symbol inside a Huffman-encoded string")]
    EndOfStringInside,
    /// The last bits are not a prefix of the end-of-string symbol of at most 7 bits.
    #[error("a Huffman-encoded string ends with bad padding")]
    BadPadding,
}

/// The canonical code as tables for decoding one bit at a time.
struct Code {
    /// The first code of each length, as a number of that many bits.
    first_code: [u32; CODE_LENGTH_MAX + 1],
    /// How many symbols have each length.
    count: [u16; CODE_LENGTH_MAX + 1],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; CODE_LENGTH_MAX + 1],
    /// Every symbol, ordered by code length, then by value: the canonical order.
    symbols: [u16; 257],
}

/// Builds [`Code`] from [`CODE_LENGTHS`] at compile time.
const fn build_code() -> Code {
    let mut count = [0u16; CODE_LENGTH_MAX + 1];
    let mut symbol = 0;
    while symbol < CODE_LENGTHS.len() {
        count[CODE_LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    let mut first_code = [0u32; CODE_LENGTH_MAX + 1];
    let mut offset = [0u16; CODE_LENGTH_MAX + 1];
    let mut next_code = 0u32;
    let mut next_offset = 0u16;
    let mut length = 1;
    while length <= CODE_LENGTH_MAX {
        next_code <<= 1;
        first_code[length] = next_code;
        offset[length] = next_offset;
        next_code += count[length] as u32;
        next_offset += count[length];
        length += 1;
    }
    let mut symbols = [0u16; 257];
    let mut placed = [0u16; CODE_LENGTH_MAX + 1];
    let mut symbol = 0;
    while symbol < CODE_LENGTHS.len() {
        let length = CODE_LENGTHS[symbol] as usize;
        symbols[(offset[length] + placed[length]) as usize] = symbol as u16;
        placed[length] += 1;
        symbol += 1;
    }
    Code {
        first_code,
        count,
        offset,
        symbols,
    }
}

static CODE: Code = build_code();

/// Decodes a Huffman-encoded string, appending the bytes to `decoded`.
pub fn decode(encoded: &[u8], decoded: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let code_table = &CODE;
    // The bits of the symbol being read so far, and how many.
    let mut code = 0u32;
    let mut length = 0usize;
    for &byte in encoded {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            length += 1;
            let index = code.wrapping_sub(code_table.first_code[length]);
            if index < u32::from(code_table.count[length]) {
                let symbol =
                    code_table.symbols[usize::from(code_table.offset[length]) + index as usize];
                if usize::from(symbol) == END_OF_STRING {
                    return Err(HuffmanError::EndOfStringInside);
                }
                decoded.push(symbol as u8);
                code = 0;
                length = 0;
            } else if length == CODE_LENGTH_MAX {
                // Every 30-bit pattern is a code or the prefix of none: the code is complete.
                unreachable!("HPACK's Huffman code is complete");
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the end-of-string symbol's first bits).
    if length > 7 || code != (1u32 << length) - 1 {
        return Err(HuffmanError::BadPadding);
    }
    Ok(())
}

/// Each symbol's code and its length, built the canonical way from the lengths alone.
#[cfg(test)]
fn codes() -> Vec<(u32, usize)> {
    let code_table = &CODE;
    let mut codes = vec![(0, 0); 257];
    for length in 1..=CODE_LENGTH_MAX {
        for index in 0..code_table.count[length] {
            let symbol = code_table.symbols[usize::from(code_table.offset[length] + index)];
            codes[usize::from(symbol)] = (code_table.first_code[length] + u32::from(index), length);
        }
    }
    codes
}

/// Encodes `text` with the Huffman code, for tests that play a client's encoder.
#[cfg(test)]
pub fn encode(text: &[u8]) -> Vec<u8> {
    let codes = codes();
    let mut bits: Vec<bool> = Vec::new();
    for &byte in text {
        let (code, length) = codes[usize::from(byte)];
        bits.extend((0..length).rev().map(|shift| (code >> shift) & 1 == 1));
    }
    // Padding: the end-of-string symbol's first bits, up to the next whole byte.
    let padding_bits = (8 - bits.len() % 8) % 8;
    bits.extend(std::iter::repeat_n(true, padding_bits));
    bits.chunks(8)
        .map(|byte| {
            byte.iter()
                .fold(0u8, |sum, &bit| (sum << 1) | u8::from(bit))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|byte| *byte != b' ').collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn the_code_lengths_make_a_complete_prefix_code() {
        // Kraft's equality: the code wastes no bit pattern.
        let total: u64 = CODE_LENGTHS
            .iter()
            .map(|&length| 1u64 << (CODE_LENGTH_MAX - usize::from(length)))
            .sum();
        assert_eq!(total, 1u64 << CODE_LENGTH_MAX);
    }

    #[test]
    fn codes_match_rfc_7541_appendix_b_where_each_length_starts() {
        let codes = codes();
        // The first and last symbols of several lengths, as the RFC's table gives them.
        let expected: [(usize, u32, usize); 12] = [
            (b'0' as usize, 0x0, 5),
            (b' ' as usize, 0x14, 6),
            (b':' as usize, 0x5c, 7),
            (b'&' as usize, 0xf8, 8),
            (b'Z' as usize, 0xfd, 8),
            (0, 0x1ff8, 13),
            (b'\\' as usize, 0x7fff0, 19),
            (128, 0xfffe6, 20),
            (1, 0x7f_ffd8, 23),
            (9, 0xff_ffea, 24),
            (2, 0xfff_ffe2, 28),
            (END_OF_STRING, 0x3fff_ffff, 30),
        ];
        for (symbol, code, length) in expected {
            assert_eq!(codes[symbol], (code, length), "symbol {symbol}");
        }
    }

    #[test]
    fn decodes_rfc_7541_appendix_c_examples() {
        let examples = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ];
        for (encoded, text) in examples {
            let mut decoded = Vec::new();
            decode(&hex(encoded), &mut decoded).expect(text);
            assert_eq!(String::from_utf8(decoded).unwrap(), text);
            assert_eq!(encode(text.as_bytes()), hex(encoded), "{text}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let mut decoded = Vec::new();
        decode(&encode(&every_byte), &mut decoded).unwrap();
        assert_eq!(decoded, every_byte);
        let mut decoded = Vec::new();
        decode(&[], &mut decoded).unwrap();
        assert!(decoded.is_empty());
    }

    #[test]
    fn refuses_bad_padding_and_the_end_of_string_symbol() {
        let mut decoded = Vec::new();
        // '0' is 00000: three zero bits of padding after it.
        assert_eq!(decode(&[0x00], &mut decoded), Err(HuffmanError::BadPadding));
        // A whole byte of ones is more than 7 bits of padding.
        assert_eq!(
            decode(&[0x07, 0xff], &mut decoded),
            Err(HuffmanError::BadPadding)
        );
        // The end-of-string symbol's 30 ones, then padding.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut decoded),
            Err(HuffmanError::EndOfStringInside)
        );
    }
}
