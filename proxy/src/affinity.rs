//! RequestID affinity without shared state.
//!
//! When an agent answers a PreRequest with a RequestID, the proxy appends a short suffix naming
//! that agent: `~` + 13 base32 characters of its [`AffinityToken`] + 2 base32 characters of a
//! checksum over the original ID and the token. Any proxy replica (or this one after a restart)
//! decodes the suffix of an UpdateRequest's RequestID, routes to the named agent and restores the
//! original ID. The checksum makes an ID that merely looks like ours decode as "no token" with
//! probability 1023/1024, and even then its token would still have to name a current member
//! before anything is dialled.
//!
//! Public because the format is a contract between proxy replicas and versions
//! (`docs/affinity.md`), and so that `benches/codec.rs` measures these functions, not a copy.

use agent_pool::AffinityToken;

/// Marks the start of the suffix.
const SEPARATOR: u8 = b'~';
/// 13 × 5 bits hold the 64-bit token (the first character carries the top 4 bits).
const TOKEN_CHARS: usize = 13;
/// 2 × 5 bits of checksum.
const CHECK_CHARS: usize = 2;
/// Length of the whole suffix.
pub const SUFFIX_LEN: usize = 1 + TOKEN_CHARS + CHECK_CHARS;

/// RFC 4648 base32, lowercase: safe in any header or log line.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn decode_char(c: u8) -> Option<u64> {
    match c {
        b'a'..=b'z' => Some(u64::from(c - b'a')),
        b'2'..=b'7' => Some(u64::from(c - b'2' + 26)),
        _ => None,
    }
}

/// 10 bits of FNV-1a over the original ID and the token.
fn checksum(original: &[u8], token: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in original.iter().chain(&token.to_be_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32) ^ (h >> 17)) & 0x3ff
}

/// The original RequestID with the token of the agent that issued it appended.
pub fn encode(original: &[u8], token: AffinityToken) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len() + SUFFIX_LEN);
    out.extend_from_slice(original);
    out.push(SEPARATOR);
    for i in (0..TOKEN_CHARS).rev() {
        out.push(ALPHABET[((token.0 >> (i * 5)) & 31) as usize]);
    }
    let check = checksum(original, token.0);
    for i in (0..CHECK_CHARS).rev() {
        out.push(ALPHABET[((check >> (i * 5)) & 31) as usize]);
    }
    out
}

/// Splits a RequestID made by [`encode`] into the original ID and the token; `None` when the ID
/// carries no valid suffix.
pub fn decode(id: &[u8]) -> Option<(&[u8], AffinityToken)> {
    let start = id.len().checked_sub(SUFFIX_LEN)?;
    let (original, suffix) = id.split_at(start);
    if suffix[0] != SEPARATOR {
        return None;
    }
    let mut token: u64 = 0;
    let first = decode_char(suffix[1])?;
    if first > 15 {
        return None; // would overflow 64 bits: not one of ours
    }
    token = (token << 5) | first;
    for &c in &suffix[2..=TOKEN_CHARS] {
        token = (token << 5) | decode_char(c)?;
    }
    let mut check: u64 = 0;
    for &c in &suffix[1 + TOKEN_CHARS..] {
        check = (check << 5) | decode_char(c)?;
    }
    (check == checksum(original, token)).then_some((original, AffinityToken(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shape() {
        let id = encode(
            b"5f1c2d3e4a5b6c7d8e9f0a1b",
            AffinityToken(0xdead_beef_0123_4567),
        );
        let text = std::str::from_utf8(&id).unwrap();
        assert_eq!(text.len(), 24 + SUFFIX_LEN);
        assert!(text.starts_with("5f1c2d3e4a5b6c7d8e9f0a1b~"), "{text}");
        assert_eq!(
            decode(&id),
            Some((
                &b"5f1c2d3e4a5b6c7d8e9f0a1b"[..],
                AffinityToken(0xdead_beef_0123_4567)
            ))
        );
    }

    #[test]
    fn plain_ids_carry_no_token() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"5f1c2d3e4a5b6c7d8e9f0a1b"), None);
        assert_eq!(decode(b"abc~aaaaaaaaaaaaaaa"), None);
    }

    #[test]
    fn a_changed_suffix_is_rejected() {
        let id = encode(b"request-1", AffinityToken(42));
        let mut other = id.clone();
        // Same token appended to another ID: checksum mismatch.
        other[0] = b'R';
        assert_eq!(decode(&other), None);
    }

    proptest! {
        #[test]
        fn round_trip(original in proptest::collection::vec(any::<u8>(), 0..64), token in any::<u64>()) {
            let id = encode(&original, AffinityToken(token));
            prop_assert_eq!(decode(&id), Some((&original[..], AffinityToken(token))));
        }

        #[test]
        fn random_lookalikes_rarely_decode(tail in "[a-z2-7]{15}", head in "[0-9a-f]{0,24}") {
            // Strings of exactly our shape pass the checksum about once in 1024; proptest's
            // 256 cases should practically never hit one, and the decoded value must still
            // round-trip when it does.
            let id = format!("{head}~{tail}");
            if let Some((original, token)) = decode(id.as_bytes()) {
                prop_assert_eq!(encode(original, token), id.as_bytes().to_vec());
            }
        }
    }
}
