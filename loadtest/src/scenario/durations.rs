//! Durations in scenario files, in the units' one format (`2s`, `500ms`), for serde's `with`:
//! apart from the scenario types so that every table that holds a duration (the scenario's,
//! the `[autoscale]` table's) reads it the same way.

/// A required duration.
pub(crate) mod required {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::units::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// An optional duration.
pub(crate) mod optional {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| crate::units::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
