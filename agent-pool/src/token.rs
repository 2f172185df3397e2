//! The affinity token: a short name for an agent that every proxy replica computes alike, and
//! its 32-bit fold for RequestIDs with little room to spare (docs/affinity.md).

use std::fmt;
use std::str::FromStr;

use crate::EndpointId;

/// A stable 64-bit hash of an [`EndpointId`]: FNV-1a 64 over the id's UTF-8 bytes, with no
/// random seed, so every proxy replica and every restarted proxy computes the same token for
/// the same agent. `Display` is 16 lowercase hex digits; `FromStr` reads them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityToken(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl AffinityToken {
    /// The token of an endpoint id.
    pub fn of(id: &EndpointId) -> Self {
        Self::of_bytes(id.as_str().as_bytes())
    }

    /// FNV-1a 64 of raw bytes.
    pub const fn of_bytes(bytes: &[u8]) -> Self {
        let mut hash = FNV_OFFSET;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(FNV_PRIME);
            i += 1;
        }
        Self(hash)
    }

    /// The 32-bit fold (high half XOR low half: FNV-1a's low bits alone mix worst) that a
    /// RequestID carries when the full token does not fit in its string header class.
    pub const fn short(self) -> ShortToken {
        ShortToken((self.0 ^ (self.0 >> 32)) as u32)
    }
}

/// [`AffinityToken::short`]: two agents share one with probability 2^-32, and the pool names
/// one owner per value ([`crate::Snapshot::by_short_token`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortToken(pub u32);

impl fmt::Display for AffinityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a text is not an [`AffinityToken`].
#[derive(Debug, thiserror::Error)]
#[error("invalid affinity token {text:?}: expected 16 hex digits")]
pub struct TokenError {
    /// The rejected text.
    pub text: String,
}

impl FromStr for AffinityToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(TokenError { text: s.to_owned() });
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| TokenError { text: s.to_owned() })
    }
}

impl serde::Serialize for AffinityToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_fnv1a_64_and_needs_no_seed() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(AffinityToken::of_bytes(b"").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(AffinityToken::of_bytes(b"a").0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(AffinityToken::of_bytes(b"foobar").0, 0x8594_4171_f739_67e8);
        let id = EndpointId::from("sigsci-agent-7d9f-abcde");
        assert_eq!(AffinityToken::of(&id), AffinityToken::of(&id.clone()));
    }

    #[test]
    fn short_token_folds_both_halves() {
        assert_eq!(
            AffinityToken(0x0123_4567_89ab_cdef).short(),
            ShortToken(0x0123_4567 ^ 0x89ab_cdef)
        );
    }

    #[test]
    fn token_text_round_trips() {
        let t = AffinityToken::of(&EndpointId::from("10.0.0.1:9999"));
        let text = t.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<AffinityToken>().unwrap(), t);
        assert!("xyz".parse::<AffinityToken>().is_err());
    }
}
