//! The one way the processes read their configuration: each declares the environment variables
//! it takes as a struct (field `ingest_http_addr` is `INGEST_HTTP_ADDR`) with its defaults in
//! `Default`, and `from_env` fills it with `envy`. A variable set but empty counts as unset (as
//! shells and compose files leave them); a value that does not parse names its variable.

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(String);

impl EnvError {
    pub fn invalid(var: &str, why: impl std::fmt::Display) -> Self {
        EnvError(format!("{var} is not valid: {why}"))
    }
}

/// The variables of `T` from the process environment.
pub fn from_env<T: DeserializeOwned>() -> Result<T, EnvError> {
    from_vars(std::env::vars())
}

/// The variables of `T` from `vars` (tests pass their own).
pub fn from_vars<T: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, EnvError> {
    let set = vars.into_iter().filter(|(_, v)| !v.trim().is_empty());
    envy::from_iter(set).map_err(|e| match e {
        // envy names the field; the variable is its upper case.
        envy::Error::Custom(msg) => EnvError(upper_field_names(&msg)),
        envy::Error::MissingValue(field) => {
            EnvError(format!("{} is not set", field.to_uppercase()))
        }
    })
}

/// envy's "error parsing field 'x'..." with the variable's name instead of the field's.
fn upper_field_names(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quoted = msg.split('\'');
    if let Some(first) = quoted.next() {
        out.push_str(first);
    }
    for (i, part) in quoted.enumerate() {
        out.push('\'');
        out.push_str(&if i % 2 == 0 {
            part.to_uppercase()
        } else {
            part.to_string()
        });
    }
    out.replace("field '", "variable '")
}

/// A socket address, its error naming the variable (serde's own does not).
pub fn addr(var: &str, raw: &str) -> Result<std::net::SocketAddr, EnvError> {
    raw.trim().parse().map_err(|e| EnvError::invalid(var, e))
}

/// A whole number of at least 1 (a limit of 0 would refuse everything).
pub fn at_least_one(var: &str, value: usize) -> Result<usize, EnvError> {
    if value == 0 {
        Err(EnvError::invalid(var, "must be at least 1"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(default)]
    struct Env {
        some_http_addr: String,
        some_limit: usize,
        some_name: Option<String>,
    }

    impl Default for Env {
        fn default() -> Self {
            Env {
                some_http_addr: "127.0.0.1:1".into(),
                some_limit: 7,
                some_name: None,
            }
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_values_and_errors_that_name_the_variable() {
        let env: Env = from_vars(vars(&[("SOME_LIMIT", "9"), ("SOME_NAME", " ")])).unwrap();
        assert_eq!(env.some_limit, 9);
        assert_eq!(env.some_name, None, "empty is unset");
        assert!(addr("SOME_HTTP_ADDR", &env.some_http_addr).is_ok());
        let e = addr("SOME_HTTP_ADDR", "nowhere").unwrap_err();
        assert!(e.to_string().contains("SOME_HTTP_ADDR"), "{e}");
        let e = from_vars::<Env>(vars(&[("SOME_LIMIT", "-1")])).unwrap_err();
        assert!(e.to_string().contains("SOME_LIMIT"), "{e}");
        assert!(at_least_one("SOME_LIMIT", 0).is_err());
    }
}
