//! FHIR R4 input: parsing Bundles and NDJSON into entries, and normalizing each entry into a
//! record with its patient's local identity.

pub mod control;
mod normalize;
mod parse;

pub use normalize::{normalize, normalize_with, Record, Rejection, SourceContext};
pub use parse::{ndjson_entry, parse_bundle, parse_ndjson, BundleKind, Entry};
