//! Parsing Canonical Form and the CRC-64-AVRO fingerprint, written from the Avro specification.
//!
//! Not taken from `apache-avro`: its canonical form keeps `logicalType` (AVRO-4004), so its
//! fingerprints differ from Java's and fastavro's for schemas with logical types.

use serde_json::Value;

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

fn table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            }
            *slot = fp;
        }
        t
    })
}

/// CRC-64-AVRO (Rabin) of `bytes`, as the specification's `fingerprint64`.
pub fn fingerprint64(bytes: &[u8]) -> u64 {
    let t = table();
    bytes.iter().fold(EMPTY, |fp, b| {
        (fp >> 8) ^ t[((fp ^ u64::from(*b)) & 0xff) as usize]
    })
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a schema given as JSON.
pub fn parsing_canonical_form(schema: &Value) -> String {
    let mut out = String::new();
    write_schema(schema, None, &mut Vec::new(), &mut out);
    out
}

fn fullname(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        _ if name.contains('.') => name.to_string(),
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn push_str(out: &mut String, s: &str) {
    // serde_json writes non-ASCII as UTF-8 and escapes only what JSON requires: [STRINGS].
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

fn write_schema(schema: &Value, ns: Option<&str>, seen: &mut Vec<String>, out: &mut String) {
    match schema {
        Value::String(name) => {
            if PRIMITIVES.contains(&name.as_str()) {
                push_str(out, name);
            } else {
                push_str(out, &fullname(name, ns));
            }
        }
        Value::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(b, ns, seen, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let ty = map.get("type").and_then(Value::as_str).unwrap_or("");
            match ty {
                "record" | "error" | "enum" | "fixed" => {
                    let name = map.get("name").and_then(Value::as_str).unwrap_or("");
                    let own_ns = map.get("namespace").and_then(Value::as_str).or(ns);
                    let full = fullname(name, own_ns);
                    // A nested type without a namespace takes its parent's: the fullname's prefix.
                    let inner_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                    if seen.contains(&full) {
                        push_str(out, &full);
                        return;
                    }
                    seen.push(full.clone());
                    out.push_str("{\"name\":");
                    push_str(out, &full);
                    out.push_str(",\"type\":");
                    push_str(out, if ty == "error" { "record" } else { ty });
                    match ty {
                        "enum" => {
                            out.push_str(",\"symbols\":");
                            out.push_str(
                                &map.get("symbols").cloned().unwrap_or_default().to_string(),
                            );
                        }
                        "fixed" => {
                            let size = map.get("size").and_then(Value::as_u64).unwrap_or(0);
                            out.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            out.push_str(",\"fields\":[");
                            let fields = map.get("fields").and_then(Value::as_array);
                            for (i, f) in fields.into_iter().flatten().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                out.push_str("{\"name\":");
                                push_str(out, f.get("name").and_then(Value::as_str).unwrap_or(""));
                                out.push_str(",\"type\":");
                                let fty = f.get("type").unwrap_or(&Value::Null);
                                write_schema(fty, inner_ns.as_deref(), seen, out);
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    write_schema(map.get("items").unwrap_or(&Value::Null), ns, seen, out);
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    write_schema(map.get("values").unwrap_or(&Value::Null), ns, seen, out);
                    out.push('}');
                }
                // A primitive in object form, with or without a logicalType: [PRIMITIVES], [STRIP].
                _ => write_schema(map.get("type").unwrap_or(&Value::Null), ns, seen, out),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed with fastavro 1.x (`to_parsing_canonical_form`, `fingerprint`),
    // an implementation independent of this one; the hex is of the little-endian bytes.
    fn le_hex(fp: u64) -> String {
        fp.to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn primitive_fingerprints_match_the_specification() {
        assert_eq!(le_hex(fingerprint64(b"\"int\"")), "8f5c393f1ad57572");
        assert_eq!(le_hex(fingerprint64(b"\"null\"")), "8a8f25cce724dd63");
    }

    #[test]
    fn canonical_form_strips_logical_types_docs_and_defaults() {
        let schema: Value = serde_json::from_str(
            r#"{"type":"record","name":"A","namespace":"x.y","fields":[
              {"name":"t","type":{"type":"long","logicalType":"timestamp-micros"}},
              {"name":"e","type":["null",{"type":"record","name":"B","fields":[
                 {"name":"s","type":"string","doc":"d"}]}],"default":null},
              {"name":"c","type":{"type":"array","items":"B"}}]}"#,
        )
        .unwrap();
        let pcf = parsing_canonical_form(&schema);
        assert_eq!(
            pcf,
            r#"{"name":"x.y.A","type":"record","fields":[{"name":"t","type":"long"},{"name":"e","type":["null",{"name":"x.y.B","type":"record","fields":[{"name":"s","type":"string"}]}]},{"name":"c","type":{"type":"array","items":"x.y.B"}}]}"#
        );
        assert_eq!(le_hex(fingerprint64(pcf.as_bytes())), "512dbac03aa3db90");
    }
}
