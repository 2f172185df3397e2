//! RequestID affinity without shared state.
//!
//! When an agent answers with a RequestID, the proxy appends a suffix naming that agent; any
//! proxy replica (or this one after a restart) decodes the suffix of an UpdateRequest's
//! RequestID, routes to the named agent and restores the original ID. The tagged ID must keep
//! the MessagePack string header class the agent used (a `fixstr` stays within 31 bytes, a
//! `str8` within 255, ...): some module decoders (PHP's bundled `msgpack.php`) know no `str8`.
//! So there are two suffixes, and the first that fits the class is used:
//!
//! - **full**, 16 bytes: `~` + 13 base32 characters of the 64-bit [`AffinityToken`] + 2 of a
//!   10-bit checksum over the original ID and the token. The format of the previous release,
//!   unchanged: replicas of either release read it.
//! - **short**, 7 bytes: `~` + 6 base64url characters holding the 32-bit [`ShortToken`] and a
//!   4-bit checksum. Fits a 24-character ID (the real agents' form) in a `fixstr`. Two agents may
//!   share a short token (2^-32 per pair); the pool names one owner per value, and only the
//!   owner's IDs get a short suffix.
//!
//! An ID with room for neither goes untagged (its UpdateRequest is balanced).
//!
//! Public because the format is a contract between proxy replicas and versions
//! (`docs/affinity.md`), and so that `benches/codec.rs` measures these functions, not a copy.

use agent_pool::{AffinityToken, ShortToken};

/// Marks the start of either suffix.
const SEPARATOR: u8 = b'~';
/// 13 × 5 bits hold the 64-bit token (the first character carries the top 4 bits).
const TOKEN_CHARS: usize = 13;
/// 2 × 5 bits of checksum.
const CHECK_CHARS: usize = 2;
/// Length of the whole full suffix.
pub const SUFFIX_LEN: usize = 1 + TOKEN_CHARS + CHECK_CHARS;
/// 6 × 6 bits: the 32-bit short token, then 4 bits of checksum.
const SHORT_CHARS: usize = 6;
/// Length of the whole short suffix.
pub const SHORT_SUFFIX_LEN: usize = 1 + SHORT_CHARS;

/// RFC 4648 base32, lowercase: safe in any header or log line.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// RFC 4648 base64url: as safe, 6 bits a character.
const ALPHABET64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Which agent a tagged RequestID names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// By its full token (the full suffix).
    Full(AffinityToken),
    /// By its short token (the short suffix): the owner of that value.
    Short(ShortToken),
}

/// The most bytes a string may have and keep the header class that `len` bytes get from the
/// smallest header: 31 (`fixstr`), 255 (`str8`), 65,535 (`str16`), else `u32::MAX` (`str32`).
pub fn class_capacity(len: usize) -> usize {
    match len {
        0..=31 => 31,
        32..=255 => 255,
        256..=65_535 => 65_535,
        _ => u32::MAX as usize,
    }
}

fn decode_char(c: u8) -> Option<u64> {
    match c {
        b'a'..=b'z' => Some(u64::from(c - b'a')),
        b'2'..=b'7' => Some(u64::from(c - b'2' + 26)),
        _ => None,
    }
}

fn decode_char64(c: u8) -> Option<u64> {
    match c {
        b'A'..=b'Z' => Some(u64::from(c - b'A')),
        b'a'..=b'z' => Some(u64::from(c - b'a' + 26)),
        b'0'..=b'9' => Some(u64::from(c - b'0' + 52)),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// FNV-1a 64 over the original ID and the token's bytes, folded.
fn fnv(original: &[u8], token: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in original.iter().chain(token) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 32) ^ (h >> 17)
}

/// 10 bits over the original ID and the full token.
fn checksum(original: &[u8], token: u64) -> u64 {
    fnv(original, &token.to_be_bytes()) & 0x3ff
}

/// 4 bits over the original ID and the short token.
fn short_checksum(original: &[u8], short: u32) -> u64 {
    fnv(original, &short.to_be_bytes()) & 0xf
}

/// The original RequestID with a suffix naming `token`'s agent, at most `capacity` bytes long
/// (the agent's string header class, [`class_capacity`]): the full suffix if it fits, else the
/// short one if `short_owned` (the agent owns its short token) and it fits, else `None`.
pub fn encode(
    original: &[u8],
    token: AffinityToken,
    capacity: usize,
    short_owned: bool,
) -> Option<Vec<u8>> {
    if original.len() + SUFFIX_LEN <= capacity {
        return Some(encode_full(original, token));
    }
    if short_owned && original.len() + SHORT_SUFFIX_LEN <= capacity {
        return Some(encode_short(original, token.short()));
    }
    None
}

/// The full suffix (the previous release's only format).
pub fn encode_full(original: &[u8], token: AffinityToken) -> Vec<u8> {
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

/// The short suffix.
pub fn encode_short(original: &[u8], short: ShortToken) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len() + SHORT_SUFFIX_LEN);
    out.extend_from_slice(original);
    out.push(SEPARATOR);
    let bits = (u64::from(short.0) << 4) | short_checksum(original, short.0);
    for i in (0..SHORT_CHARS).rev() {
        out.push(ALPHABET64[((bits >> (i * 6)) & 63) as usize]);
    }
    out
}

/// Splits a RequestID made by [`encode`] (or by the previous release) into the original ID and
/// the agent it names; `None` when the ID carries no valid suffix.
pub fn decode(id: &[u8]) -> Option<(&[u8], Tag)> {
    decode_full(id)
        .map(|(o, t)| (o, Tag::Full(t)))
        .or_else(|| decode_short(id).map(|(o, t)| (o, Tag::Short(t))))
}

fn decode_full(id: &[u8]) -> Option<(&[u8], AffinityToken)> {
    let start = id.len().checked_sub(SUFFIX_LEN)?;
    let (original, suffix) = id.split_at(start);
    if suffix[0] != SEPARATOR {
        return None;
    }
    let first = decode_char(suffix[1])?;
    if first > 15 {
        return None; // would overflow 64 bits: not one of ours
    }
    let mut token = first;
    for &c in &suffix[2..=TOKEN_CHARS] {
        token = (token << 5) | decode_char(c)?;
    }
    let mut check: u64 = 0;
    for &c in &suffix[1 + TOKEN_CHARS..] {
        check = (check << 5) | decode_char(c)?;
    }
    (check == checksum(original, token)).then_some((original, AffinityToken(token)))
}

fn decode_short(id: &[u8]) -> Option<(&[u8], ShortToken)> {
    let start = id.len().checked_sub(SHORT_SUFFIX_LEN)?;
    let (original, suffix) = id.split_at(start);
    if suffix[0] != SEPARATOR {
        return None;
    }
    let mut bits: u64 = 0;
    for &c in &suffix[1..] {
        bits = (bits << 6) | decode_char64(c)?;
    }
    let short = (bits >> 4) as u32;
    (bits & 0xf == short_checksum(original, short)).then_some((original, ShortToken(short)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: AffinityToken = AffinityToken(0xdead_beef_0123_4567);

    #[test]
    fn shape() {
        let id = encode(b"5f1c2d3e4a5b6c7d8e9f0a1b", TOKEN, 255, true).unwrap();
        let text = std::str::from_utf8(&id).unwrap();
        assert_eq!(text.len(), 24 + SUFFIX_LEN);
        assert!(text.starts_with("5f1c2d3e4a5b6c7d8e9f0a1b~"), "{text}");
        assert_eq!(
            decode(&id),
            Some((&b"5f1c2d3e4a5b6c7d8e9f0a1b"[..], Tag::Full(TOKEN)))
        );
    }

    #[test]
    fn a_24_character_id_in_a_fixstr_gets_the_short_suffix_and_stays_a_fixstr() {
        let original = b"0123456789abcdef01234567";
        let id = encode(original, TOKEN, class_capacity(24), true).unwrap();
        assert_eq!(id.len(), 31, "{}", String::from_utf8_lossy(&id));
        assert_eq!(
            decode(&id),
            Some((&original[..], Tag::Short(TOKEN.short())))
        );
        // An agent that does not own its short token gets no tag rather than a wrong one.
        assert_eq!(encode(original, TOKEN, 31, false), None);
        // 25 characters leave no room in a fixstr.
        assert_eq!(encode(b"0123456789abcdef012345678", TOKEN, 31, true), None);
    }

    #[test]
    fn docs_examples() {
        // docs/affinity.md, "The suffix".
        let token = AffinityToken::of_bytes(b"sigsci/sigsci-agent-7d9f-abcde");
        let short = encode(b"5f1c2d3e4a5b6c7d8e9f0a1b", token, 31, true).unwrap();
        assert_eq!(short, b"5f1c2d3e4a5b6c7d8e9f0a1b~-sl7yT");
        let uuid = b"0b4f1a2e-6c1d-4e8b-9a7f-3c2d1e0f9a8b";
        let full = encode(uuid, token, 255, true).unwrap();
        assert_eq!(
            full,
            b"0b4f1a2e-6c1d-4e8b-9a7f-3c2d1e0f9a8b~pabl24ifmyajlml"
        );
    }

    #[test]
    fn the_previous_release_format_still_decodes() {
        // docs/affinity.md's example, as the previous release wrote it: the agent
        // `sigsci/sigsci-agent-7d9f-abcde`, token f0057ae20acc012b.
        let token = AffinityToken::of_bytes(b"sigsci/sigsci-agent-7d9f-abcde");
        assert_eq!(token.0, 0xf005_7ae2_0acc_012b);
        assert_eq!(
            decode(b"5f1c2d3e4a5b6c7d8e9f0a1b~pabl24ifmyajl2i"),
            Some((&b"5f1c2d3e4a5b6c7d8e9f0a1b"[..], Tag::Full(token)))
        );
    }

    #[test]
    fn plain_ids_carry_no_token() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"5f1c2d3e4a5b6c7d8e9f0a1b"), None);
        assert_eq!(decode(b"abc~aaaaaaaaaaaaaaa"), None);
        assert_eq!(decode(b"0b4f1a2e-6c1d-4e8b-9a7f-3c2d1e0f9a8b"), None);
    }

    #[test]
    fn a_changed_suffix_is_rejected() {
        for id in [
            encode_full(b"request-1", TOKEN),
            encode_short(b"request-1", TOKEN.short()),
        ] {
            // Same suffix appended to another ID: checksum mismatch.
            let mut other = id.clone();
            other[0] = b'R';
            assert_eq!(decode(&other), None);
        }
    }

    /// The smallest header class of `len` bytes, as an index: fixstr, str8, str16, str32.
    fn class(len: usize) -> usize {
        [31, 255, 65_535, u32::MAX as usize]
            .iter()
            .position(|&c| class_capacity(len) == c)
            .unwrap()
    }

    #[test]
    fn every_length_from_1_to_300_round_trips_in_its_class() {
        let mut tagged = [0usize; 2];
        for len in 1..=300 {
            let hex: Vec<u8> = (0..len).map(|i| b"0123456789abcdef"[i % 16]).collect();
            for short_owned in [true, false] {
                let capacity = class_capacity(len);
                match encode(&hex, TOKEN, capacity, short_owned) {
                    Some(id) => {
                        assert!(id.len() <= capacity, "{len}");
                        assert_eq!(class_capacity(id.len()), capacity, "{len}");
                        assert_eq!(decode(&id).map(|(o, _)| o), Some(&hex[..]), "{len}");
                        tagged[usize::from(short_owned)] += 1;
                    }
                    None => assert_eq!(decode(&hex), None, "{len}"),
                }
            }
        }
        // Untagged: 16-31 (not owning the short token) or 25-31, and 240-255 or 249-255.
        assert_eq!(tagged, [300 - 16 - 16, 300 - 7 - 7]);
    }

    proptest! {
        #[test]
        fn ids_of_every_length_round_trip_in_their_class(
            len in 1usize..=300,
            seed in any::<u64>(),
            hex in any::<bool>(),
            token in any::<u64>(),
            short_owned in any::<bool>(),
            old_spec in any::<bool>(),
        ) {
            let original: Vec<u8> = (0..len as u64)
                .map(|i| {
                    let r = (seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
                    let r = (r >> 29) as u8;
                    if hex { b"0123456789abcdef"[usize::from(r % 16)] } else { r }
                })
                .collect();
            let token = AffinityToken(token);
            // An encoder without str8 writes 32-255 bytes as str16: that class is kept instead.
            let capacity = if old_spec && len > 31 { 65_535 } else { class_capacity(len) };
            match encode(&original, token, capacity, short_owned) {
                Some(id) => {
                    prop_assert!(id.len() <= capacity);
                    if !old_spec {
                        prop_assert_eq!(class(id.len()), class(len));
                    }
                    let (back, tag) = decode(&id).expect("a tagged ID decodes");
                    prop_assert_eq!(back, &original[..]);
                    prop_assert!(tag == Tag::Full(token) || (short_owned && tag == Tag::Short(token.short())));
                }
                None => {
                    // Only where neither suffix fits the class.
                    let room = capacity - len;
                    prop_assert!(room < SHORT_SUFFIX_LEN || (!short_owned && room < SUFFIX_LEN));
                    prop_assert_eq!(decode(&original), None);
                }
            }
        }

        #[test]
        fn random_lookalikes_rarely_decode(tail in "[a-z2-7]{15}", head in "[0-9a-f]{0,24}") {
            // Strings of exactly our shape pass the checksum about once in 1024; proptest's
            // 256 cases should practically never hit one, and the decoded value must still
            // round-trip when it does.
            let id = format!("{head}~{tail}");
            if let Some((original, Tag::Full(token))) = decode(id.as_bytes()) {
                prop_assert_eq!(encode_full(original, token), id.as_bytes().to_vec());
            }
        }
    }
}
