//! The keys a benchmark writes and reads: fixed-size keys that name integers of a key space,
//! chosen in sequence or uniformly.
//!
//! Rationale: a request's key is a function of the request's number (and a seed) alone, not of
//! any worker's state, so that a run touches the same keys whatever the number of clients, and
//! a range run after a put run with the same key space reads keys that exist.

/// How keys are chosen from the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Request `n` uses key `n mod key_space`: every key in turn.
    Sequential,
    /// Each request draws its key uniformly from the key space.
    Uniform,
}

/// Makes the keys of a run.
#[derive(Clone, Debug)]
pub struct KeyGenerator {
    key_size_bytes: usize,
    key_space: u64,
    order: KeyOrder,
    seed: u64,
}

/// How many decimal digits `value` has.
fn decimal_digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// A 64-bit mix of `value` (splitmix64's finaliser): consecutive inputs give unrelated outputs.
pub fn mix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps a uniform 64-bit value onto `0..bound` (multiply and keep the high half; its bias is at
/// most `bound / 2^64`, far below anything a benchmark could see).
fn below(random: u64, bound: u64) -> u64 {
    ((u128::from(random) * u128::from(bound)) >> 64) as u64
}

impl KeyGenerator {
    /// A generator of `key_size_bytes`-byte keys over `key_space` distinct keys. Keys are the
    /// key's number in decimal, zero-padded to the key size, so the size must hold the largest
    /// number.
    pub fn new(
        key_size_bytes: usize,
        key_space: u64,
        order: KeyOrder,
        seed: u64,
    ) -> Result<KeyGenerator, String> {
        if key_space == 0 {
            return Err("--key-space must be at least 1".into());
        }
        let digits = decimal_digits(key_space - 1);
        if key_size_bytes < digits {
            return Err(format!(
                "--key-size {key_size_bytes} cannot name {key_space} distinct keys: \
                 it needs at least {digits} bytes"
            ));
        }
        Ok(KeyGenerator {
            key_size_bytes,
            key_space,
            order,
            seed,
        })
    }

    /// How many distinct keys there are.
    pub fn key_space(&self) -> u64 {
        self.key_space
    }

    /// The number (in `0..key_space`) of the key that request `request` uses.
    pub fn index(&self, request: u64) -> u64 {
        match self.order {
            KeyOrder::Sequential => request % self.key_space,
            KeyOrder::Uniform => below(mix64(self.seed ^ mix64(request)), self.key_space),
        }
    }

    /// The key numbered `index`: exactly `key_size_bytes` bytes.
    pub fn key(&self, index: u64) -> Vec<u8> {
        format!("{index:0width$}", width = self.key_size_bytes).into_bytes()
    }

    /// The key that request `request` uses.
    pub fn key_for(&self, request: u64) -> Vec<u8> {
        self.key(self.index(request))
    }

    /// `count` distinct keys for request `request`, for a transaction (etcd refuses a
    /// transaction that writes one key twice). The caller makes sure `count <= key_space`.
    pub fn distinct_keys_for(&self, request: u64, count: usize) -> Vec<Vec<u8>> {
        let first = self.index(request);
        (0..count as u64)
            .map(|offset| self.key((first + offset) % self.key_space))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_visit_every_key_in_turn() {
        let keys = KeyGenerator::new(4, 3, KeyOrder::Sequential, 0).unwrap();
        let chosen: Vec<Vec<u8>> = (0..7).map(|request| keys.key_for(request)).collect();
        let expected: Vec<&[u8]> = vec![
            b"0000", b"0001", b"0002", b"0000", b"0001", b"0002", b"0000",
        ];
        assert_eq!(chosen, expected);
    }

    #[test]
    fn keys_have_exactly_the_key_size() {
        let keys = KeyGenerator::new(16, 10_000, KeyOrder::Uniform, 7).unwrap();
        for request in 0..1000 {
            assert_eq!(keys.key_for(request).len(), 16);
        }
    }

    #[test]
    fn uniform_keys_stay_in_the_space_and_cover_it() {
        let keys = KeyGenerator::new(8, 100, KeyOrder::Uniform, 42).unwrap();
        let mut seen = [0u32; 100];
        for request in 0..100_000 {
            let index = keys.index(request);
            assert!(index < 100, "index {index} outside the key space");
            seen[index as usize] += 1;
        }
        // 1,000 draws expected per key; a uniform draw stays well within 700..1300.
        for (index, &count) in seen.iter().enumerate() {
            assert!(count > 700, "key {index} drawn only {count} times");
            assert!(count < 1300, "key {index} drawn {count} times");
        }
    }

    #[test]
    fn uniform_keys_depend_on_the_seed_and_nothing_else() {
        let first = KeyGenerator::new(8, 1_000_000, KeyOrder::Uniform, 1).unwrap();
        let again = KeyGenerator::new(8, 1_000_000, KeyOrder::Uniform, 1).unwrap();
        let other = KeyGenerator::new(8, 1_000_000, KeyOrder::Uniform, 2).unwrap();
        let run = |keys: &KeyGenerator| (0..50).map(|r| keys.index(r)).collect::<Vec<_>>();
        assert_eq!(run(&first), run(&again));
        assert_ne!(run(&first), run(&other));
    }

    #[test]
    fn a_key_size_too_small_for_the_space_is_refused() {
        let error = KeyGenerator::new(3, 10_000, KeyOrder::Uniform, 0).unwrap_err();
        assert!(error.contains("at least 4 bytes"), "{error}");
        assert!(KeyGenerator::new(4, 10_000, KeyOrder::Uniform, 0).is_ok());
        assert!(KeyGenerator::new(1, 10, KeyOrder::Sequential, 0).is_ok());
    }

    #[test]
    fn an_empty_key_space_is_refused() {
        assert!(KeyGenerator::new(8, 0, KeyOrder::Uniform, 0).is_err());
    }

    #[test]
    fn transaction_keys_are_distinct_and_wrap_around_the_space() {
        let keys = KeyGenerator::new(2, 5, KeyOrder::Sequential, 0).unwrap();
        let chosen = keys.distinct_keys_for(3, 4);
        let expected: Vec<&[u8]> = vec![b"03", b"04", b"00", b"01"];
        assert_eq!(chosen, expected);
    }
}
