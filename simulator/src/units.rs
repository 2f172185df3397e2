//! Parsing of the human-friendly quantities the command line takes (`200us`, `10s`, `exp:200us`).

use std::time::Duration;

/// Parses a duration with its unit: `200us`, `5ms`, `1.5s`, `2m` (humantime's syntax, the same
/// as the proxy's options). A bare number is an error, `0` excepted: `10` could be seconds or
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} (examples: 200us, 5ms, 10s)"))
}

/// How long the simulated agent works on one RPC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Always the same.
    Fixed(Duration),
    /// Exponentially distributed with this mean (`exp:200us`).
    Exponential(Duration),
}

impl ServiceTime {
    /// Draws one service time.
    pub fn sample(&self) -> Duration {
        match *self {
            ServiceTime::Fixed(d) => d,
            ServiceTime::Exponential(mean) => {
                // Inverse-CDF sampling; 1 - u is in (0, 1] so ln never sees 0.
                let u: f64 = rand::random::<f64>();
                mean.mul_f64(-(1.0 - u).ln())
            }
        }
    }

    /// The mean service time.
    pub fn mean(&self) -> Duration {
        match *self {
            ServiceTime::Fixed(d) | ServiceTime::Exponential(d) => d,
        }
    }
}

impl std::str::FromStr for ServiceTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("exp:") {
            Some(rest) => parse_duration(rest).map(ServiceTime::Exponential),
            None => parse_duration(s).map(ServiceTime::Fixed),
        }
    }
}

impl std::fmt::Display for ServiceTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceTime::Fixed(d) => write!(f, "{d:?}"),
            ServiceTime::Exponential(d) => write!(f, "exp:{d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200us").unwrap(), Duration::from_micros(200));
        assert_eq!(parse_duration("5ms").unwrap(), Duration::from_millis(5));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err(), "a bare number has no unit");
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(
            "exp:1ms".parse::<ServiceTime>().unwrap(),
            ServiceTime::Exponential(Duration::from_millis(1))
        );
    }
}
