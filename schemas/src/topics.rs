//! The project's topics. The log is the source of truth, so nothing is ever deleted by age.

/// The largest FHIR resource accepted, as JSON (a document with its attachment).
pub const MAX_RESOURCE_BYTES: usize = 16 * 1024 * 1024;
/// The largest message on any topic: a largest resource, its envelope and room for the JSON
/// escaping a normalized resource may add. Producers, topics and fetches are all set to it.
pub const MAX_MESSAGE_BYTES: usize = 2 * MAX_RESOURCE_BYTES;

pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
}

/// Normalized records and patient merges, keyed by patient (`PatientIdentity::key`; a merge by
/// its prior patient).
pub const RECORDS: TopicSpec = TopicSpec {
    name: "hie.records",
    partitions: 3,
};
/// Consent decisions, keyed by patient.
pub const CONSENTS: TopicSpec = TopicSpec {
    name: "hie.consents",
    partitions: 3,
};
/// Source registrations, keyed by source id.
pub const SOURCES: TopicSpec = TopicSpec {
    name: "hie.sources",
    partitions: 1,
};
/// Dead letters (every rejected input) and their re-submissions, keyed by source id.
pub const DEAD_LETTERS: TopicSpec = TopicSpec {
    name: "hie.deadletter",
    partitions: 1,
};

/// Every read of clinical data (the audit trail), keyed by enterprise patient id.
pub const ACCESS: TopicSpec = TopicSpec {
    name: "hie.access",
    partitions: 3,
};
/// Break-the-Glass grants, keyed by enterprise patient id.
pub const BREAK_GLASS: TopicSpec = TopicSpec {
    name: "hie.breakglass",
    partitions: 1,
};

/// User accounts, keyed by user id; one partition, so every reader applies them in one order.
pub const ACCOUNTS: TopicSpec = TopicSpec {
    name: "hie.accounts",
    partitions: 1,
};

/// Portal sign-ins and password events (`CredentialRecorded`), keyed by user id. Not in `ALL`:
/// only the query API writes it and no view is derived from it (the projector skips it); the
/// query API creates it.
pub const CREDENTIALS: TopicSpec = TopicSpec {
    name: "hie.credentials",
    partitions: 1,
};

/// EHR clients (`ClientRegistered`), keyed by client id; one partition, applied in one order.
/// Not in `ALL`: only the query API writes and follows it (no view is derived from it); the
/// query API creates it.
pub const CLIENTS: TopicSpec = TopicSpec {
    name: "hie.clients",
    partitions: 1,
};

/// The master patient index's decisions (`IdentityDecided`), keyed by the identity decided on;
/// one partition, so every reader applies links and unlinks in one order.
pub const IDENTITY: TopicSpec = TopicSpec {
    name: "hie.identity",
    partitions: 1,
};

pub const ALL: [&TopicSpec; 8] = [
    &RECORDS,
    &CONSENTS,
    &SOURCES,
    &DEAD_LETTERS,
    &ACCESS,
    &BREAK_GLASS,
    &ACCOUNTS,
    &IDENTITY,
];
