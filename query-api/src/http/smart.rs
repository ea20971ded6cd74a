//! SMART on FHIR system scopes (App Launch 2.x, v2 syntax `system/Observation.rs`; the v1
//! `system/Observation.read` is read as `.rs`). This API is read-only: a scope grants reading
//! (`r`) and searching (`s`) of one resource type or of all (`*`); `c`, `u`, `d` are never
//! granted.

use std::fmt;

/// One `system/<type>.<permissions>` scope, reduced to what this API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// A resource type, or `*`.
    pub resource_type: String,
    pub read: bool,
    pub search: bool,
}

impl Scope {
    /// `None` for anything but a system scope naming a resource type (or `*`) with read or
    /// search permissions (SMART v2 `cruds` in that order, or v1 `read`/`*`).
    pub fn parse(s: &str) -> Option<Scope> {
        let rest = s.strip_prefix("system/")?;
        let (resource_type, permissions) = rest.split_once('.')?;
        let type_ok = resource_type == "*"
            || (resource_type.starts_with(|c: char| c.is_ascii_uppercase())
                && resource_type.len() <= 64
                && resource_type.chars().all(|c| c.is_ascii_alphabetic()));
        if !type_ok {
            return None;
        }
        // v2 permissions may carry a query (`.rs?category=...`): not served, so not granted.
        let (read, search) = match permissions {
            "read" | "*" => (true, true),
            p if !p.is_empty() && is_ordered_subset(p, "cruds") => {
                (p.contains('r'), p.contains('s'))
            }
            _ => return None,
        };
        (read || search).then(|| Scope {
            resource_type: resource_type.to_string(),
            read,
            search,
        })
    }

    fn covers(&self, other: &Scope) -> bool {
        (self.resource_type == "*" || self.resource_type == other.resource_type)
            && (self.read || !other.read)
            && (self.search || !other.search)
    }
}

fn is_ordered_subset(p: &str, of: &str) -> bool {
    let mut rest = of.chars();
    p.chars().all(|c| rest.by_ref().any(|o| o == c))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.read { "r" } else { "" };
        let s = if self.search { "s" } else { "" };
        write!(f, "system/{}.{r}{s}", self.resource_type)
    }
}

/// The scopes a token carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    /// Space-separated scopes; the ones that are no system read scope are left out.
    pub fn parse(s: &str) -> Scopes {
        Scopes(s.split_whitespace().filter_map(Scope::parse).collect())
    }

    /// What of `requested` the client's registration `allowed` covers (SMART: the server may
    /// grant less than asked); read and search reduced to what an allowed scope gives.
    pub fn grant(requested: &Scopes, allowed: &Scopes) -> Scopes {
        let mut granted: Vec<Scope> = Vec::new();
        let mut add = |s: Scope| {
            if (s.read || s.search) && !granted.contains(&s) {
                granted.push(s);
            }
        };
        for want in &requested.0 {
            for a in &allowed.0 {
                // `*` asked of a client allowed some types is granted those types.
                let resource_type = match (want.resource_type.as_str(), a.resource_type.as_str()) {
                    (w, "*") => w,
                    ("*", t) => t,
                    (w, t) if w == t => w,
                    _ => continue,
                };
                add(Scope {
                    resource_type: resource_type.to_string(),
                    read: want.read && a.read,
                    search: want.search && a.search,
                });
            }
        }
        Scopes(granted)
    }

    /// Whether every scope here is still covered by `allowed` (a registration narrowed since
    /// the token was issued stops it).
    pub fn within(&self, allowed: &Scopes) -> bool {
        self.0.iter().all(|s| allowed.0.iter().any(|a| a.covers(s)))
    }

    pub fn may_read(&self, resource_type: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.read && (s.resource_type == "*" || s.resource_type == resource_type))
    }

    pub fn may_search(&self, resource_type: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.search && (s.resource_type == "*" || s.resource_type == resource_type))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Scope::to_string).collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_read_scopes_in_v2_and_v1_syntax() {
        let s = Scope::parse("system/Observation.rs").unwrap();
        assert!(s.read && s.search && s.resource_type == "Observation");
        assert_eq!(
            Scope::parse("system/*.read").unwrap().to_string(),
            "system/*.rs"
        );
        assert_eq!(
            Scope::parse("system/Patient.r").unwrap().to_string(),
            "system/Patient.r"
        );
        assert_eq!(
            Scope::parse("system/Patient.cruds").unwrap().to_string(),
            "system/Patient.rs"
        );
        for bad in [
            "user/Observation.rs",
            "patient/*.rs",
            "system/Observation.c",
            "system/Observation.sr",
            "system/observation.rs",
            "system/Observation.rs?category=laboratory",
            "launch",
            "system/Observation",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_grant_is_what_the_registration_covers() {
        let allowed = Scopes::parse("system/Observation.rs system/Patient.r");
        let granted = Scopes::grant(
            &Scopes::parse("system/Observation.rs system/Patient.rs system/Condition.rs"),
            &allowed,
        );
        assert_eq!(
            granted.to_string(),
            "system/Observation.rs system/Patient.r"
        );
        assert!(granted.within(&allowed));
        assert!(!granted.within(&Scopes::parse("system/Observation.rs")));
        let all = Scopes::grant(&Scopes::parse("system/*.rs"), &Scopes::parse("system/*.rs"));
        assert!(all.may_search("Encounter") && all.may_read("Patient"));
        assert_eq!(
            Scopes::grant(&Scopes::parse("system/*.rs"), &allowed),
            allowed
        );
        assert!(Scopes::grant(&Scopes::parse("system/Encounter.rs"), &allowed).is_empty());
    }
}
