//! The master patient index: which source identities (`assigning_authority|mrn`) are one person.
//!
//! `normalize` reads a FHIR Patient into comparable `Features`; `compare` puts two identities'
//! fields into agreement levels; `model` weighs the levels (Fellegi–Sunter, m and u estimated from
//! the data by EM); `matcher` decides, one identity at a time, against everything it knows.

pub mod compare;
pub mod matcher;
pub mod model;
pub mod nicknames;
pub mod normalize;

pub use compare::Comparison;
pub use matcher::{Candidate, Decision, Matcher, Thresholds};
pub use model::Model;
pub use normalize::Features;
