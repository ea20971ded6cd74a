//! Paging of FHIR searchsets: keyset pages over a snapshot. The first page fixes a bound (the
//! time it was served); every later page shows only records the HIE received up to that bound,
//! in the order (received time, type, source, id), after (or before) the last key shown. So a
//! record inserted or updated while a client pages is neither shown twice nor shifts a page;
//! it shows in the next search. The cursor travels in the `next`/`previous` links (`_cursor`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `_count` when a search names none, and the most it may ask for.
pub const DEFAULT_COUNT: usize = 100;
pub const MAX_COUNT: usize = 1000;

/// Where an item sorts. The enterprise Patient of `$everything` sorts first (`received` MIN).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub received: i64,
    pub resource_type: String,
    pub source: String,
    pub id: String,
}

pub struct Item {
    pub key: Key,
    pub resource: Value,
}

/// A position in a search: the snapshot bound, and the key the page starts after or ends
/// before (neither: the first page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub bound: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Key>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Key>,
}

impl Cursor {
    pub fn first(bound: i64) -> Cursor {
        Cursor {
            bound,
            after: None,
            before: None,
        }
    }

    /// The opaque `_cursor` value: hex of its JSON (URL-safe as it is).
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a cursor serializes");
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        if !s.len().is_multiple_of(2) || s.len() > 8192 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect();
        serde_json::from_slice(&bytes?).ok()
    }
}

/// One page of a search.
pub struct Page {
    pub resources: Vec<Value>,
    /// Every match in the snapshot, across pages.
    pub total: usize,
    pub next: Option<Cursor>,
    pub previous: Option<Cursor>,
}

/// The page `cursor` names of `items` (every match, any order), `count` long.
pub fn page(mut items: Vec<Item>, count: usize, cursor: &Cursor) -> Page {
    items.retain(|i| i.key.received <= cursor.bound);
    items.sort_by(|a, b| a.key.cmp(&b.key));
    let total = items.len();
    let (start, end) = match (&cursor.after, &cursor.before) {
        (_, Some(before)) => {
            let end = items.partition_point(|i| i.key < *before);
            (end.saturating_sub(count), end)
        }
        (Some(after), None) => {
            let start = items.partition_point(|i| i.key <= *after);
            (start, (start + count).min(total))
        }
        (None, None) => (0, count.min(total)),
    };
    let at = |i: usize| Some(items[i].key.clone());
    let next = (end < total && end > start).then(|| Cursor {
        bound: cursor.bound,
        after: at(end - 1),
        before: None,
    });
    let previous = (start > 0 && end > start).then(|| Cursor {
        bound: cursor.bound,
        after: None,
        before: at(start),
    });
    let resources = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|i| i.resource)
        .collect();
    Page {
        resources,
        total,
        next,
        previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(received: i64, id: &str) -> Item {
        Item {
            key: Key {
                received,
                resource_type: "Observation".into(),
                source: "s".into(),
                id: id.into(),
            },
            resource: json!({"id": id}),
        }
    }

    fn ids(p: &Page) -> Vec<String> {
        p.resources
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pages_walk_forward_and_back_and_ignore_later_inserts() {
        let all = || {
            (1..=5)
                .map(|n| item(n, &format!("o{n}")))
                .collect::<Vec<_>>()
        };
        let first = page(all(), 2, &Cursor::first(10));
        assert_eq!(
            (ids(&first), first.total),
            (vec!["o1".into(), "o2".into()], 5)
        );
        assert!(first.previous.is_none());
        let next = Cursor::decode(&first.next.unwrap().encode()).unwrap();
        // Received while paging, after the snapshot bound: not shown, the total unchanged.
        let mut grown = all();
        grown.push(item(11, "late"));
        let second = page(grown, 2, &next);
        assert_eq!(ids(&second), vec!["o3", "o4"]);
        assert_eq!(second.total, 5);
        let third = page(all(), 2, second.next.as_ref().unwrap());
        assert_eq!(ids(&third), vec!["o5"]);
        assert!(third.next.is_none());
        let back = page(all(), 2, third.previous.as_ref().unwrap());
        assert_eq!(ids(&back), vec!["o3", "o4"]);
        let start = page(all(), 2, back.previous.as_ref().unwrap());
        assert_eq!(ids(&start), vec!["o1", "o2"]);
        assert!(start.previous.is_none());
        assert!(Cursor::decode("zz").is_none());
        let none = page(all(), 0, &Cursor::first(10));
        assert_eq!((none.resources.len(), none.total), (0, 5));
        assert!(none.next.is_none());
    }
}
