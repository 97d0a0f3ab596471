//! The one way configuration files spell a duration: a number of seconds
//! (`2.5`) or a string with a unit (`"250ms"`, `"10s"`, `"5m"`, `"1h 30m"`,
//! humantime's syntax). Use as `#[serde(with = "tributary_core::duration")]`
//! on a `Duration`, or `tributary_core::duration::option` on an
//! `Option<Duration>`. Serialized as seconds.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a duration: seconds as a number, or a string such as \"250ms\", \"10s\", \"5m\"",
        )
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v)
            .map_err(|_| E::custom("a duration must be a non-negative number of seconds"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration must be a non-negative number of seconds"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v.trim()).map_err(|e| {
            E::custom(format!(
                "not a duration ({e}); write seconds as a number, or e.g. \"250ms\", \"10s\", \"5m\""
            ))
        })
    }
}

/// The same for `Option<Duration>` (absent or a duration).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct C {
        #[serde(with = "super")]
        d: Duration,
        #[serde(default, with = "option")]
        o: Option<Duration>,
    }

    fn parse(json: &str) -> Result<C, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn seconds_or_a_string_with_a_unit() {
        assert_eq!(
            parse(r#"{"d": 2.5}"#).unwrap().d,
            Duration::from_millis(2500)
        );
        assert_eq!(parse(r#"{"d": 3}"#).unwrap().d, Duration::from_secs(3));
        assert_eq!(
            parse(r#"{"d": "250ms"}"#).unwrap().d,
            Duration::from_millis(250)
        );
        assert_eq!(
            parse(r#"{"d": "1h 30m"}"#).unwrap().d,
            Duration::from_secs(5400)
        );
        let c = parse(r#"{"d": 1, "o": "5m"}"#).unwrap();
        assert_eq!(c.o, Some(Duration::from_secs(300)));
        assert_eq!(parse(r#"{"d": 1}"#).unwrap().o, None);
        assert!(parse(r#"{"d": -1}"#).is_err());
        let e = parse(r#"{"d": "ten seconds"}"#).err().unwrap().to_string();
        assert!(e.contains("not a duration"), "{e}");
    }
}
