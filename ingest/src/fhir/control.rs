//! FHIR strings may not hold C0 control characters other than tab, CR and LF (R4, "string"):
//! U+0000 among them, which PostgreSQL refuses in `text` and `jsonb`. Such input is refused at
//! the door, naming where it is, never what it is.

use serde_json::Value;

/// A character a FHIR string (and an HL7 v2 value) may not hold.
pub fn forbidden(c: char) -> bool {
    c < ' ' && !matches!(c, '\t' | '\r' | '\n')
}

/// The JSON path (`Observation.code.coding[0].display`) of the first string or member name
/// holding a forbidden character, if any.
pub fn find(resource: &Value) -> Option<String> {
    let root = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|t| !t.chars().any(forbidden))
        .unwrap_or("resource");
    let mut path = root.to_string();
    walk(resource, &mut path).then_some(path)
}

/// True when `value` holds a forbidden character; `path` then names where.
fn walk(value: &Value, path: &mut String) -> bool {
    match value {
        Value::String(s) => s.chars().any(forbidden),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = walk(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            if k.chars().any(forbidden) {
                path.push_str(".<member name>");
                return true;
            }
            let len = path.len();
            path.push('.');
            path.push_str(k);
            let found = walk(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_path_not_the_value() {
        let r = json!({"resourceType": "Observation", "code": {"coding": [{"code": "1"}, {"display": "a\u{0}b"}]}});
        assert_eq!(
            find(&r).as_deref(),
            Some("Observation.code.coding[1].display")
        );
        let r = json!({"resourceType": "Patient", "name": [{"text": "tab\tcr\rlf\n ok"}]});
        assert_eq!(find(&r), None);
        for c in ['\u{1}', '\u{b}', '\u{1c}', '\u{1f}'] {
            let r = json!({"resourceType": "Patient", "x": format!("a{c}")});
            assert_eq!(find(&r).as_deref(), Some("Patient.x"), "{c:?}");
        }
        let mut obj = serde_json::Map::new();
        obj.insert("bad\u{0}key".into(), json!(1));
        assert_eq!(
            find(&Value::Object(obj)).as_deref(),
            Some("resource.<member name>")
        );
        // U+007F and C1 controls are allowed by FHIR R4.
        assert_eq!(find(&json!({"a": "\u{7f}\u{85}"})), None);
    }
}
