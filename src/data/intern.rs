//! Token interning for the loader: a fast hasher for short tokens and an interner that maps
//! each distinct token to a provisional id, first come first served.
use std::collections::HashMap;

/// FxHash-style word hashing with a murmur3 finish: fast on short tokens. Files are local
/// input, not an adversary, so no keyed (DoS-resistant) hash is needed.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.hash = (self.hash.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn finish(&self) -> u64 {
        // The multiply only mixes upward; finish with murmur3's fmix64 so the low bits that
        // pick a bucket depend on every input byte.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// Tokens of up to this many bytes are stored inline in the map's key (no pointer to chase).
const INLINE: usize = 23;

/// A short token packed into 24 bytes: the bytes, zero-filled, then the length.
fn inline_key(token: &str) -> Option<[u8; INLINE + 1]> {
    let b = token.as_bytes();
    (b.len() <= INLINE).then(|| {
        let mut k = [0u8; INLINE + 1];
        k[..b.len()].copy_from_slice(b);
        k[INLINE] = b.len() as u8;
        k
    })
}

/// Token -> provisional id, first come first served; later turned into id -> token.
/// Short tokens (nearly all ids) live inline in the hash table, which keeps a lookup to about
/// one cache miss on files with millions of rows.
#[derive(Default)]
pub(crate) struct Interner {
    short: HashMap<[u8; INLINE + 1], u32, FxBuild>,
    long: HashMap<Box<str>, u32, FxBuild>,
}

impl Interner {
    pub(crate) fn get(&self, token: &str) -> Option<u32> {
        match inline_key(token) {
            Some(k) => self.short.get(&k).copied(),
            None => self.long.get(token).copied(),
        }
    }
    pub(crate) fn intern(&mut self, token: &str) -> u32 {
        let next = self.len() as u32;
        match inline_key(token) {
            Some(k) => *self.short.entry(k).or_insert(next),
            None => {
                if let Some(&id) = self.long.get(token) {
                    return id;
                }
                self.long.insert(token.into(), next);
                next
            }
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
    pub(crate) fn into_tokens(self) -> Vec<Box<str>> {
        let mut out: Vec<Box<str>> = vec![Box::default(); self.len()];
        for (k, v) in self.short {
            let len = k[INLINE] as usize;
            // The bytes came from a &str, so they are UTF-8.
            out[v as usize] = String::from_utf8_lossy(&k[..len]).into();
        }
        for (k, v) in self.long {
            out[v as usize] = k;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    /// 20,000 short tokens (inline keys, hashed in whole words) and 20,000 long ones whose
    /// differing bytes fall in the tail after the last whole word: their hashes, each masked.
    fn hashes(mask: u64) -> (HashSet<u64>, HashSet<u64>) {
        let build = FxBuild::default();
        let prefix = "x".repeat(INLINE + 1);
        let short = (0..N)
            .map(|i| build.hash_one(inline_key(&format!("i{i}")).unwrap()) & mask)
            .collect();
        let long = (0..N)
            .map(|i| build.hash_one(format!("{prefix}{i:05}").as_str()) & mask)
            .collect();
        (short, long)
    }
    const N: usize = 20_000;

    /// The interner is correct with any hash; this pins the spread its speed relies on:
    /// distinct tokens get distinct 64-bit hashes.
    #[test]
    fn distinct_tokens_hash_apart() {
        let (short, long) = hashes(u64::MAX);
        assert_eq!(short.len(), N, "short tokens collide");
        assert_eq!(long.len(), N, "long tokens collide");
    }

    /// A hash map picks a bucket from the hash's low bits, which the word loop alone leaves
    /// nearly constant for short tokens (their last word is mostly zero padding); the finish
    /// must spread them. 20,000 keys in 65,536 buckets fill about 17,200 when the low 16 bits
    /// are uniform (standard deviation about 50).
    #[test]
    fn low_bits_spread_over_buckets() {
        let (short, long) = hashes(0xffff);
        assert!(
            short.len() > 16_500,
            "short tokens fill {} buckets",
            short.len()
        );
        assert!(
            long.len() > 16_500,
            "long tokens fill {} buckets",
            long.len()
        );
    }

    /// Tokens of up to INLINE bytes are stored inline, longer ones boxed, and ids count both.
    #[test]
    fn short_tokens_live_inline_and_ids_count_both_maps() {
        let mut interner = Interner::default();
        let short = "s".repeat(INLINE);
        let long = "l".repeat(INLINE + 1);
        assert_eq!(interner.intern(&short), 0);
        assert_eq!(interner.intern(&long), 1);
        assert_eq!(interner.intern("a"), 2);
        assert_eq!(interner.intern(&long), 1);
        assert_eq!((interner.short.len(), interner.long.len()), (2, 1));
        assert_eq!(interner.len(), 3);
        assert_eq!(interner.get(&long), Some(1));
        assert_eq!(interner.get("b"), None);
        let tokens = interner.into_tokens();
        let tokens: Vec<&str> = tokens.iter().map(|t| &**t).collect();
        assert_eq!(tokens, [short.as_str(), long.as_str(), "a"]);
    }
}
