//! Position tokens: the offsets an ingest response's records were written at, so a later read can
//! wait until the views include them (`X-Min-Position`).

use std::collections::BTreeMap;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

const PREFIX: &str = "p1.";

/// For each (topic, partition), the offset of the last message written there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(BTreeMap<(String, i32), i64>);

#[derive(Debug, thiserror::Error)]
#[error("malformed position token")]
pub struct BadPosition;

impl Position {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `offset` was written; keeps the highest offset per partition.
    pub fn include(&mut self, topic: &str, partition: i32, offset: i64) {
        let slot = self
            .0
            .entry((topic.to_string(), partition))
            .or_insert(offset);
        *slot = (*slot).max(offset);
    }

    pub fn merge(&mut self, other: &Position) {
        for ((t, p), o) in &other.0 {
            self.include(t, *p, *o);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.0.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    pub fn encode(&self) -> String {
        let plain: Vec<String> = self
            .entries()
            .map(|(t, p, o)| format!("{t}:{p}:{o}"))
            .collect();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(plain.join(",")))
    }

    pub fn decode(token: &str) -> Result<Self, BadPosition> {
        let body = token.strip_prefix(PREFIX).ok_or(BadPosition)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body.trim())
            .map_err(|_| BadPosition)?;
        let plain = String::from_utf8(bytes).map_err(|_| BadPosition)?;
        let mut pos = Position::new();
        for item in plain.split(',').filter(|s| !s.is_empty()) {
            let mut parts = item.rsplitn(3, ':');
            let offset = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(BadPosition)?;
            let partition = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(BadPosition)?;
            let topic = parts.next().filter(|t| !t.is_empty()).ok_or(BadPosition)?;
            if offset < 0 || partition < 0 {
                return Err(BadPosition);
            }
            pos.include(topic, partition, offset);
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_highest_offset() {
        let mut p = Position::new();
        p.include("hie.records", 2, 17);
        p.include("hie.records", 2, 9);
        p.include("hie.consents", 0, 3);
        let back = Position::decode(&p.encode()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.entries().find(|e| e.1 == 2).unwrap().2, 17);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "p1.!!", "x.abc", "p1.aGllOng", "p1.OjA6MQ"] {
            assert!(Position::decode(bad).is_err(), "{bad}");
        }
    }
}
