//! Demographics as the matcher compares them, read from a FHIR Patient: letters folded to
//! lower-case ASCII (José → jose), nicknames to one canonical name (Bill → william), street types
//! abbreviated one way (Street, St. → st), phones and SSNs to their digits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nicknames;

const SSN_SYSTEM: &str = "http://hl7.org/fhir/sid/us-ssn";

/// One identity's demographics, normalised. Every field may be missing: a missing field is no
/// evidence either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub given: Option<String>,
    pub family: Option<String>,
    /// A previous family name the source sent (`use` maiden or old): a married name is no
    /// disagreement when it matches the other side's.
    pub former_family: Option<String>,
    /// `YYYY-MM-DD` as sent; only complete dates are kept.
    pub birth_date: Option<String>,
    /// `male`, `female`, `other`; `unknown` is missing.
    pub sex: Option<String>,
    /// The first address line: house number and street, types abbreviated.
    pub street: Option<String>,
    /// The first five digits of the postal code.
    pub postal_code: Option<String>,
    /// The last ten digits of the first phone number.
    pub phone: Option<String>,
    /// Nine digits.
    pub ssn: Option<String>,
}

impl Features {
    pub fn from_patient(patient: &Value) -> Features {
        let names = patient
            .get("name")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        fn name_use(n: &Value) -> &str {
            n.get("use").and_then(Value::as_str).unwrap_or("")
        }
        let current = names
            .iter()
            .find(|n| name_use(n) == "official")
            .or_else(|| {
                names
                    .iter()
                    .find(|n| !matches!(name_use(n), "maiden" | "old" | "nickname"))
            })
            .or_else(|| names.first());
        let family_of = |n: &Value| n.get("family").and_then(Value::as_str).and_then(name);
        let former_family = names
            .iter()
            .filter(|n| matches!(name_use(n), "maiden" | "old"))
            .find_map(family_of);
        let given = current
            .and_then(|n| n.get("given"))
            .and_then(Value::as_array)
            .and_then(|g| g.first())
            .and_then(Value::as_str)
            .and_then(name);
        let address = patient
            .get("address")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        let phone = patient
            .get("telecom")
            .and_then(Value::as_array)
            .and_then(|t| {
                t.iter()
                    .filter(|c| c.get("system").and_then(Value::as_str) == Some("phone"))
                    .find_map(|c| c.get("value").and_then(Value::as_str).and_then(phone))
            });
        let ssn = patient
            .get("identifier")
            .and_then(Value::as_array)
            .and_then(|ids| {
                ids.iter()
                    .filter(|i| i.get("system").and_then(Value::as_str) == Some(SSN_SYSTEM))
                    .find_map(|i| i.get("value").and_then(Value::as_str).and_then(ssn))
            });
        Features {
            given,
            family: current.and_then(family_of),
            former_family,
            birth_date: patient
                .get("birthDate")
                .and_then(Value::as_str)
                .filter(|d| birth_date(d).is_some())
                .map(str::to_string),
            sex: patient
                .get("gender")
                .and_then(Value::as_str)
                .filter(|g| matches!(*g, "male" | "female" | "other"))
                .map(str::to_string),
            street: address
                .and_then(|a| a.get("line"))
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .and_then(Value::as_str)
                .and_then(street),
            postal_code: address
                .and_then(|a| a.get("postalCode"))
                .and_then(Value::as_str)
                .and_then(postal_code),
            phone,
            ssn,
        }
    }

    /// The given name's canonical form: a nickname's full name, else itself.
    pub fn given_canonical(&self) -> Option<&str> {
        self.given.as_deref().map(nicknames::canonical)
    }
}

/// Letters only, lower-case ASCII: diacritics, apostrophes, hyphens, spaces and digits go
/// (O'Brien → obrien; Synthea appends digits to names: Bibi254 → bibi).
pub fn name(s: &str) -> Option<String> {
    let folded: String = deunicode::deunicode(bounded(s))
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .take(MAX_COMPARED)
        .collect();
    (!folded.is_empty()).then_some(folded)
}

/// `(year, month, day)` of a complete `YYYY-MM-DD`.
pub fn birth_date(s: &str) -> Option<(u16, u8, u8)> {
    let mut parts = s.get(..10)?.split('-');
    let y = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The last ten digits (a `+1` country code or a leading 1 dropped); fewer than ten is no phone.
pub fn phone(s: &str) -> Option<String> {
    let d = digits(s);
    (d.len() >= 10).then(|| d[d.len() - 10..].to_string())
}

/// Nine digits, not all zeros and not a known placeholder.
pub fn ssn(s: &str) -> Option<String> {
    let d = digits(s);
    (d.len() == 9 && !matches!(d.as_str(), "000000000" | "999999999" | "123456789")).then_some(d)
}

pub fn postal_code(s: &str) -> Option<String> {
    let d = digits(s);
    (d.len() >= 5).then(|| d[..5].to_string())
}

/// Words lower-cased, punctuation gone, street types and unit words in their USPS abbreviation.
pub fn street(s: &str) -> Option<String> {
    let mut out = String::new();
    for word in deunicode::deunicode(bounded(s))
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
    {
        let w: String = word
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if w.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(abbreviation(&w).unwrap_or(&w));
    }
    out.truncate(out.floor_char_boundary(MAX_COMPARED));
    (!out.is_empty()).then_some(out)
}

/// The most of a name or street the matcher keeps: string comparisons cost the product of the
/// lengths, and a sender controls them.
const MAX_COMPARED: usize = 64;

/// The start of `s` that folding can make at most a few times `MAX_COMPARED` long.
fn bounded(s: &str) -> &str {
    &s[..s.floor_char_boundary(4 * MAX_COMPARED)]
}

fn abbreviation(word: &str) -> Option<&'static str> {
    Some(match word {
        "street" | "str" | "st" => "st",
        "avenue" | "av" | "ave" | "aven" => "ave",
        "road" | "rd" => "rd",
        "drive" | "dr" | "drv" => "dr",
        "lane" | "ln" => "ln",
        "boulevard" | "blvd" => "blvd",
        "court" | "ct" => "ct",
        "place" | "pl" => "pl",
        "terrace" | "ter" => "ter",
        "circle" | "cir" => "cir",
        "highway" | "hwy" => "hwy",
        "parkway" | "pkwy" => "pkwy",
        "square" | "sq" => "sq",
        "trail" | "trl" => "trl",
        "way" => "way",
        "apartment" | "apt" => "apt",
        "suite" | "ste" => "ste",
        "unit" => "unit",
        "north" | "n" => "n",
        "south" | "s" => "s",
        "east" | "e" => "e",
        "west" | "w" => "w",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_names_and_numbers() {
        assert_eq!(name("José").as_deref(), Some("jose"));
        assert_eq!(name("O'Brien-Smith").as_deref(), Some("obriensmith"));
        assert_eq!(name("Bibi254").as_deref(), Some("bibi"));
        assert_eq!(name("Zoë").as_deref(), Some("zoe"));
        assert_eq!(name("  "), None);
        assert_eq!(phone("+1 (555) 259-9533").as_deref(), Some("5552599533"));
        assert_eq!(phone("259-9533"), None);
        assert_eq!(ssn("999-97-5872").as_deref(), Some("999975872"));
        assert_eq!(ssn("000-00-0000"), None);
        assert_eq!(postal_code("01581-1234").as_deref(), Some("01581"));
        assert_eq!(
            street("346 Marvin Street, Apartment 33").as_deref(),
            Some("346 marvin st apt 33")
        );
        assert_eq!(street("346 MARVIN ST.").as_deref(), Some("346 marvin st"));
        assert_eq!(birth_date("2009-04-29"), Some((2009, 4, 29)));
        assert_eq!(birth_date("2009-04"), None);
        // What a sender controls is bounded before any comparison.
        let long = "x".repeat(1_000_000);
        assert_eq!(name(&long).unwrap().len(), MAX_COMPARED);
        assert!(street(&format!("1 {long} street")).unwrap().len() <= MAX_COMPARED);
    }

    #[test]
    fn reads_a_synthea_patient() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [
                {"system": "http://hospital.smarthealthit.org", "value": "475d"},
                {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-97-5872"}
            ],
            "name": [
                {"use": "official", "family": "Schowalter414", "given": ["Bibi254"]},
                {"use": "maiden", "family": "Keeling57", "given": ["Bibi254"]}
            ],
            "telecom": [{"system": "email", "value": "a@b"}, {"system": "phone", "value": "555-259-9533"}],
            "gender": "female",
            "birthDate": "2009-04-29",
            "address": [{"line": ["346 Marvin Divide Suite 33"], "postalCode": "01581"}]
        });
        let f = Features::from_patient(&p);
        assert_eq!(f.given.as_deref(), Some("bibi"));
        assert_eq!(f.family.as_deref(), Some("schowalter"));
        assert_eq!(f.former_family.as_deref(), Some("keeling"));
        assert_eq!(f.ssn.as_deref(), Some("999975872"));
        assert_eq!(f.phone.as_deref(), Some("5552599533"));
        assert_eq!(f.street.as_deref(), Some("346 marvin divide ste 33"));
        assert_eq!(f.postal_code.as_deref(), Some("01581"));
        assert_eq!(f.sex.as_deref(), Some("female"));
        assert_eq!(f.birth_date.as_deref(), Some("2009-04-29"));
    }
}
