//! What the patient search shows, read from a FHIR Patient resource.

use serde_json::Value;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Demographics {
    pub family: Option<String>,
    pub given: Option<String>,
    pub display_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub identifiers: Vec<(String, String)>,
}

impl Demographics {
    pub fn from_patient(patient: &Value) -> Self {
        let names = patient.get("name").and_then(Value::as_array);
        // The official name when there is one, else the first.
        let name = names.and_then(|n| {
            n.iter()
                .find(|n| n.get("use").and_then(Value::as_str) == Some("official"))
                .or_else(|| n.first())
        });
        let family = name
            .and_then(|n| n.get("family"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let givens: Vec<&str> = name
            .and_then(|n| n.get("given"))
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let text = name.and_then(|n| n.get("text")).and_then(Value::as_str);
        let display_name = match (text, givens.is_empty(), &family) {
            (Some(t), _, _) => Some(t.to_string()),
            (None, false, Some(f)) => Some(format!("{} {}", givens.join(" "), f)),
            (None, true, Some(f)) => Some(f.clone()),
            (None, false, None) => Some(givens.join(" ")),
            (None, true, None) => None,
        };
        let identifiers = patient
            .get("identifier")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(|i| {
                        Some((
                            i.get("system")?.as_str()?.to_string(),
                            i.get("value")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Demographics {
            family,
            given: givens.first().map(|g| g.to_string()),
            display_name,
            birth_date: patient
                .get("birthDate")
                .and_then(Value::as_str)
                .map(str::to_string),
            sex: patient
                .get("gender")
                .and_then(Value::as_str)
                .map(str::to_string),
            identifiers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_official_name() {
        let p = serde_json::json!({
            "name": [{"use": "nickname", "given": ["Bee"]}, {"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
            "birthDate": "1970-01-02", "gender": "female",
            "identifier": [{"system": "s", "value": "v"}, {"value": "no-system"}]
        });
        let d = Demographics::from_patient(&p);
        assert_eq!(d.family.as_deref(), Some("Doe"));
        assert_eq!(d.given.as_deref(), Some("Jane"));
        assert_eq!(d.display_name.as_deref(), Some("Jane Q Doe"));
        assert_eq!(d.identifiers, vec![("s".to_string(), "v".to_string())]);
    }
}
