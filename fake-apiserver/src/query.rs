//! Query strings and label selectors as the API server reads them (the subset clients send:
//! equality terms only).

use std::collections::BTreeMap;

/// `k=v` / `k==v` terms joined by commas; `None` for anything else.
pub(crate) fn parse_selector(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(|term| {
            let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
            (!k.contains('!')).then(|| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Whether `labels` carry every term of `selector`.
pub(crate) fn selects(
    selector: &[(String, String)],
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub(crate) fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
