-- Views derived from the event log. Every table here can be dropped and rebuilt by replaying the
-- topics from the start; nothing is written here except by the projector.

-- Where the projection stands: the next offset to apply, per topic partition, committed in the
-- same transaction as the view changes it describes (exactly-once effect).
CREATE TABLE projection_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    -- Events applied from this partition: equals next_offset when each was applied exactly once.
    applied     bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

CREATE TABLE sources (
    source_id           text PRIMARY KEY,
    name                text        NOT NULL,
    organization_id     text        NOT NULL,
    feed                text        NOT NULL,
    assigning_authority text        NOT NULL,
    data_elements       text[]      NOT NULL DEFAULT '{}',
    part2               boolean     NOT NULL DEFAULT false,
    registered_at       timestamptz NOT NULL,
    last_received_at    timestamptz
);

-- One row per enterprise patient; the demographics come from the latest Patient resource.
CREATE TABLE patients (
    patient_id          uuid PRIMARY KEY,
    assigning_authority text NOT NULL,
    mrn                 text NOT NULL,
    family              text,
    given               text,
    display_name        text,
    birth_date          text,
    sex                 text,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (assigning_authority, mrn)
);
CREATE INDEX patients_family ON patients (lower(family) text_pattern_ops);
CREATE INDEX patients_given ON patients (lower(given) text_pattern_ops);
CREATE INDEX patients_birth_date ON patients (birth_date);

CREATE TABLE patient_identifiers (
    patient_id uuid NOT NULL REFERENCES patients (patient_id),
    system     text NOT NULL,
    value      text NOT NULL,
    PRIMARY KEY (patient_id, system, value)
);
CREATE INDEX patient_identifiers_lookup ON patient_identifiers (system, value);

-- The current version of every record, per source.
CREATE TABLE records (
    source_id       text        NOT NULL,
    resource_type   text        NOT NULL,
    resource_id     text        NOT NULL,
    patient_id      uuid,
    organization_id text        NOT NULL,
    version         bigint      NOT NULL,
    content_sha256  bytea       NOT NULL,
    resource        jsonb       NOT NULL,
    sensitivity     text        NOT NULL,
    channel         text        NOT NULL,
    received_at     timestamptz NOT NULL,
    message_id      text        NOT NULL,
    event_id        text        NOT NULL,
    PRIMARY KEY (source_id, resource_type, resource_id)
);
CREATE INDEX records_by_patient ON records (patient_id, resource_type);

-- The latest decision per patient and organization ('*' = all participants).
CREATE TABLE consents (
    patient_id      uuid        NOT NULL,
    organization_id text        NOT NULL,
    decision        text        NOT NULL,
    effective_at    timestamptz,
    expires_at      timestamptz,
    part2           boolean     NOT NULL,
    method          text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    recorded_by     text        NOT NULL,
    event_id        text        NOT NULL,
    PRIMARY KEY (patient_id, organization_id)
);

CREATE TABLE dead_letters (
    event_id    text PRIMARY KEY,
    rejected_at timestamptz NOT NULL,
    source_id   text,
    channel     text        NOT NULL,
    message_id  text        NOT NULL,
    item_index  bigint,
    reason      text        NOT NULL,
    payload     text        NOT NULL
);

-- Messages the projector could not decode: kept, not silently skipped.
CREATE TABLE projection_errors (
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    "offset"  bigint      NOT NULL,
    error     text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
