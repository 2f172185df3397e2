//! How the simulator reads a request before judging it, as an agent does: every string field is
//! taken as bytes (the Go agent's decoder accepts any bytes in a MessagePack string, and attacks
//! carry invalid UTF-8), and the URI's path and query and urlencoded form bodies are
//! percent-decoded before patterns are matched (browsers send `<script>` as `%3Cscript%3E`).

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

/// A MessagePack string or binary taken as bytes, valid UTF-8 or not; nil is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Raw(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Raw, E> {
                Ok(Raw(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Raw, E> {
                Ok(Raw(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Raw, E> {
                Ok(Raw::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Raw, E> {
                Ok(Raw::default())
            }
        }
        // `any`, not `bytes`: rmp-serde hands a str with invalid UTF-8 to `visit_bytes`.
        d.deserialize_any(V)
    }
}

/// The parts of a PreRequest/PostRequest/ModuleInit an agent inspects; other keys are skipped.
#[allow(non_snake_case)]
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Inspected {
    pub(crate) URI: Raw,
    pub(crate) PostBody: Raw,
    pub(crate) HeadersIn: Vec<(Raw, Raw)>,
}

/// The params of an UpdateRequest, strings as bytes.
#[allow(non_snake_case)]
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Update {
    pub(crate) RequestID: Raw,
}

/// `%XY` → the byte 0xXY (malformed escapes stay as they are); with `plus`, `+` → space (query
/// strings and form bodies, not paths).
pub(crate) fn percent_decode(s: &[u8], plus: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%'
            && let (Some(hi), Some(lo)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    out
}

impl Inspected {
    /// Every form of the request a pattern is matched against: the raw URI, its decoded path and
    /// query, each header value, the raw body and, for a urlencoded form, the decoded body.
    pub(crate) fn views(&self) -> Vec<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        let uri = &self.URI.0;
        let (path, query) = match uri.iter().position(|&b| b == b'?') {
            Some(q) => (&uri[..q], Some(&uri[q + 1..])),
            None => (&uri[..], None),
        };
        let mut v: Vec<Cow<'_, [u8]>> = vec![Cow::Borrowed(uri)];
        if path.contains(&b'%') {
            v.push(Cow::Owned(percent_decode(path, false)));
        }
        if let Some(q) = query
            && (q.contains(&b'%') || q.contains(&b'+'))
        {
            v.push(Cow::Owned(percent_decode(q, true)));
        }
        v.extend(
            self.HeadersIn
                .iter()
                .map(|(_, val)| Cow::Borrowed(&val.0[..])),
        );
        let body = &self.PostBody.0;
        if !body.is_empty() {
            v.push(Cow::Borrowed(body));
            if self.is_form() && (body.contains(&b'%') || body.contains(&b'+')) {
                v.push(Cow::Owned(percent_decode(body, true)));
            }
        }
        v
    }

    /// Whether the body is `application/x-www-form-urlencoded` (by its Content-Type header).
    fn is_form(&self) -> bool {
        self.HeadersIn.iter().any(|(k, v)| {
            k.0.eq_ignore_ascii_case(b"content-type") && {
                let v = &v.0;
                let media = v.split(|&b| b == b';').next().unwrap_or(v);
                media
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(uri: &[u8], headers: &[(&str, &str)], body: &[u8]) -> Vec<Vec<u8>> {
        let r = Inspected {
            URI: Raw(uri.to_vec()),
            PostBody: Raw(body.to_vec()),
            HeadersIn: headers
                .iter()
                .map(|(k, v)| (Raw(k.as_bytes().to_vec()), Raw(v.as_bytes().to_vec())))
                .collect(),
        };
        r.views().into_iter().map(|v| v.into_owned()).collect()
    }

    #[test]
    fn percent_decoding_takes_escapes_leaves_malformed_ones_and_plus_only_in_queries() {
        assert_eq!(percent_decode(b"%3Cscript%3e", false), b"<script>");
        assert_eq!(percent_decode(b"a+b%2", true), b"a b%2");
        assert_eq!(percent_decode(b"a+b%zz%", false), b"a+b%zz%");
        assert_eq!(percent_decode(b"%ff%00", false), [0xff, 0x00]);
    }

    #[test]
    fn path_query_and_form_bodies_are_seen_decoded() {
        let v = views(b"/a%20b?q=%3Cscript%3E+x", &[], b"");
        assert!(v.contains(&b"/a b".to_vec()));
        assert!(v.contains(&b"q=<script> x".to_vec()));
        let form = [(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let v = views(b"/", &form, b"c=%3Cscript%3E");
        assert!(v.contains(&b"c=<script>".to_vec()));
        // Not a form: the body is matched as sent only.
        let v = views(b"/", &[("Content-Type", "text/plain")], b"c=%3Cscript%3E");
        assert!(!v.contains(&b"c=<script>".to_vec()));
    }

    #[test]
    fn strings_with_invalid_utf8_decode_as_bytes() {
        // [{"URI": b"/\xff<script>"}] with the URI as a MessagePack str, not bin.
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 1).unwrap();
        rmp::encode::write_map_len(&mut buf, 2).unwrap();
        rmp::encode::write_str(&mut buf, "URI").unwrap();
        let uri = b"/\xff<script>";
        rmp::encode::write_str_len(&mut buf, uri.len() as u32).unwrap();
        buf.extend_from_slice(uri);
        rmp::encode::write_str(&mut buf, "NowMillis").unwrap();
        rmp::encode::write_uint(&mut buf, 5).unwrap();
        let r: Inspected = crate::rpc::decode_params(&buf).unwrap();
        assert_eq!(r.URI.0, uri);
    }
}
