//! A watched membership file, as the local orchestrator writes it or a Kubernetes ConfigMap
//! mounts it. Polled (the proxy polls every 100 ms by default): polling sees ConfigMap symlink
//! swaps, editors' rename-over and plain rewrites alike, where inotify misses some. The contents
//! are compared, not just the mtime. A file that cannot be read or parsed keeps the last good
//! membership and logs why once.
//!
//! Format: JSON or TOML (by extension `.json`/`.toml`, else JSON is tried first). A list of
//! entries, each an address string or a table `{ address, state?, id? }` (`state` is `ready`
//! (default) or `terminating`; `id` defaults to the address):
//!
//! ```json
//! ["10.0.0.1:9999", {"address": "10.0.0.2:9999", "id": "agent-b", "state": "terminating"}]
//! ```
//! JSON may also wrap the list as `{"agents": [...]}`; TOML always does:
//! ```toml
//! [[agents]]
//! address = "10.0.0.1:9999"
//! [[agents]]
//! address = "unix:/var/run/sigsci.sock"
//! id = "local"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::{Address, Endpoint, EndpointId, SourceState, Update, Updates};

/// Why a membership file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read membership file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither valid JSON nor valid TOML.
    #[error("membership file {path} is not valid {format}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// "JSON", "TOML" or "JSON or TOML".
        format: &'static str,
        /// The parser's message(s).
        reason: String,
    },
    /// The document parsed but does not describe a list of agents.
    #[error("membership file {path}: {reason}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        reason: String,
    },
}

/// Reads and parses a membership file once (e.g. to validate it at start-up).
pub fn read_file(path: &Path) -> Result<Vec<Endpoint>, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &bytes)
}

/// Watches `path`, re-reading it every `poll`: yields a `Reset` with the file's agents at
/// start and after every change that parses. Never ends.
pub fn file(path: PathBuf, poll: Duration) -> Updates {
    struct State {
        path: PathBuf,
        poll: Duration,
        first: bool,
        last: Option<Vec<u8>>,
        last_error: Option<String>,
    }
    let state = State {
        path,
        poll,
        first: true,
        last: None,
        last_error: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if !s.first {
                tokio::time::sleep(s.poll).await;
            }
            s.first = false;
            let bytes = match tokio::fs::read(&s.path).await {
                Ok(b) => b,
                Err(e) => {
                    let text = e.to_string();
                    if s.last_error.as_ref() != Some(&text) {
                        tracing::warn!(path = %s.path.display(), error = %e, "Cannot read membership file; keeping the last good membership");
                        s.last_error = Some(text);
                    }
                    continue;
                }
            };
            if s.last.as_ref() == Some(&bytes) {
                continue;
            }
            let parsed = parse(&s.path, &bytes);
            s.last = Some(bytes);
            match parsed {
                Ok(endpoints) => {
                    s.last_error = None;
                    tracing::info!(path = %s.path.display(), agents = endpoints.len(), "Membership file loaded");
                    return Some((Update::Reset(endpoints), s));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Membership file rejected; keeping the last good membership");
                    s.last_error = Some(e.to_string());
                }
            }
        }
    })
    .boxed()
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Endpoint>, FileError> {
    let syntax = |format, reason: String| FileError::Syntax {
        path: path.to_owned(),
        format,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| syntax("JSON or TOML", e.to_string()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let from_toml = |text: &str| {
        toml::from_str::<toml::Table>(text)
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .map_err(|e| e.to_string())
    };
    let doc = match ext.as_deref() {
        Some("json") => {
            serde_json::from_str::<Value>(text).map_err(|e| syntax("JSON", e.to_string()))?
        }
        Some("toml") => from_toml(text).map_err(|e| syntax("TOML", e))?,
        _ => match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(json) => from_toml(text).map_err(|toml| {
                syntax("JSON or TOML", format!("as JSON: {json}; as TOML: {toml}"))
            })?,
        },
    };
    entries(&doc).map_err(|reason| FileError::Content {
        path: path.to_owned(),
        reason,
    })
}

fn entries(doc: &Value) -> Result<Vec<Endpoint>, String> {
    let list = match doc {
        Value::Array(list) => list,
        Value::Object(map) => match map.get("agents") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err("`agents` must be a list".to_owned()),
            None => return Err("expected a list of agents or an `agents` list".to_owned()),
        },
        _ => return Err("expected a list of agents or an `agents` list".to_owned()),
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| entry(v).map_err(|e| format!("agent #{}: {e}", i + 1)))
        .collect()
}

fn entry(v: &Value) -> Result<Endpoint, String> {
    let address = |text: &str| text.parse::<Address>().map_err(|e| e.to_string());
    match v {
        Value::String(text) => Ok(Endpoint::new(address(text)?)),
        Value::Object(map) => {
            if let Some(k) = map
                .keys()
                .find(|k| !matches!(k.as_str(), "address" | "state" | "id"))
            {
                return Err(format!("unknown field `{k}` (expected address, state, id)"));
            }
            let text = map
                .get("address")
                .and_then(Value::as_str)
                .ok_or("`address` (a string) is required")?;
            let mut ep = Endpoint::new(address(text)?);
            match map.get("id") {
                None | Some(Value::Null) => {}
                Some(Value::String(id)) if !id.is_empty() => ep.id = EndpointId::from(id.as_str()),
                Some(_) => return Err("`id` must be a non-empty string".to_owned()),
            }
            match map.get("state").map(|s| s.as_str()) {
                None => {}
                Some(Some("ready")) => ep.state = SourceState::Ready,
                Some(Some("terminating")) => ep.state = SourceState::Terminating,
                Some(_) => return Err("`state` must be \"ready\" or \"terminating\"".to_owned()),
            }
            Ok(ep)
        }
        _ => Err("expected an address string or a table with `address`".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, text: &str) -> Result<Vec<Endpoint>, FileError> {
        parse(Path::new(name), text.as_bytes())
    }

    #[test]
    fn json_and_toml_describe_the_same_membership() {
        let json = p(
            "m.json",
            r#"["10.0.0.1:9999", {"address": "10.0.0.2:9999", "id": "b", "state": "terminating"}]"#,
        )
        .unwrap();
        let toml = p(
            "m.toml",
            "[[agents]]\naddress = \"10.0.0.1:9999\"\n[[agents]]\naddress = \"10.0.0.2:9999\"\nid = \"b\"\nstate = \"terminating\"\n",
        )
        .unwrap();
        assert_eq!(json, toml);
        assert_eq!(json[0].id.as_str(), "10.0.0.1:9999");
        assert_eq!(json[1].id.as_str(), "b");
        assert_eq!(json[1].state, SourceState::Terminating);
        // Without an extension both are recognised.
        assert_eq!(
            p("members", r#"{"agents": ["10.0.0.1:9999"]}"#)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            p("members", "[[agents]]\naddress = \"unix:/tmp/a.sock\"\n")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = p("m.json", r#"["10.0.0.1:9999", {"address": "nope"}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent #2") && e.contains("nope"), "{e}");
        let e = p("m.json", r#"[{"adress": "10.0.0.1:9999"}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("adress"), "{e}");
        assert!(
            p("m", "").is_err(),
            "an empty (half-written) file is not an empty membership"
        );
        assert!(p("m.json", "[").is_err());
        assert_eq!(p("m.json", "[]").unwrap(), vec![]);
    }
}
