//! The value types of options the proxy alone reads: durations with units, octal modes, enums.
//! Addresses (`Address`, `HostPort`) and `NAMESPACE/SERVICE[:PORT]` (`ServiceRef`) are
//! agent-pool's, shared with the loadtest.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

/// File permissions written in octal (`0660`, `660` or `0o660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Mode(pub u32);

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(Mode(m)),
            _ => Err(format!("`{s}` is not an octal mode (examples: 0666, 0660)")),
        }
    }
}

impl From<Mode> for u32 {
    fn from(m: Mode) -> Self {
        m.0
    }
}

impl fmt::Display for Mode {
    /// Octal, as `FromStr` reads it (`0666`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How the proxy talks to agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMode {
    /// A few persistent connections per agent, RPCs multiplexed by proxy-assigned msgids.
    Mux,
    /// A new connection for every RPC, as the modules themselves do.
    PerCall,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The name an enum value is given by (`mux`, `per-call`, `json`).
fn value_name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

impl fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&value_name(self))
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&value_name(self))
    }
}

/// A duration written with a unit: `250us`, `20ms`, `1.5s`, `2m` (humantime's syntax, the same
/// as the loadtest's). A bare number is rejected, `0` excepted: `10` could mean seconds or
/// milliseconds, and a timeout off by a thousand fails silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("`{s}` is not a duration: {e} (examples: 200us, 20ms, 1.5s, 2m)"))
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

impl fmt::Display for Dur {
    /// The form `FromStr` reads back (`80ms`, `1m 30s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}
