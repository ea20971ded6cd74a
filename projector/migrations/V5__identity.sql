-- The master patient index (hie.identity). A patient row is one source identity; its enterprise
-- patient is itself, or the one it was linked into (merged_into: an ADT^A40 merge or a link the
-- matcher or a data steward decided). Records and identifiers say which identity they came from,
-- so an unlink can give each identity its own back.
ALTER TABLE records ADD COLUMN identity_id uuid;
-- Views built before this migration: each record's identity was its patient's (exact where no
-- merge happened; replaying the log rebuilds it exactly).
UPDATE records SET identity_id = patient_id;
CREATE INDEX records_by_identity ON records (identity_id);

ALTER TABLE patient_identifiers ADD COLUMN identity_id uuid;
UPDATE patient_identifiers SET identity_id = patient_id;
ALTER TABLE patient_identifiers ALTER COLUMN identity_id SET NOT NULL;
ALTER TABLE patient_identifiers DROP CONSTRAINT patient_identifiers_pkey;
ALTER TABLE patient_identifiers ADD PRIMARY KEY (identity_id, system, value);
CREATE INDEX patient_identifiers_by_patient ON patient_identifiers (patient_id);

-- When the identity joined its enterprise patient (consent: a decision recorded after the link
-- is the person's; conflicting ones from before, the stricter holds), and the demographics the
-- matcher compared (the steward's review shows both sides).
ALTER TABLE patients
    ADD COLUMN linked_at timestamptz,
    ADD COLUMN match_features jsonb;

-- Possible matches for a data steward: one row per (decision, candidate).
CREATE TABLE identity_reviews (
    event_id     text             NOT NULL,
    identity_id  uuid             NOT NULL,
    candidate_id uuid             NOT NULL,
    score        double precision NOT NULL,
    comparison   jsonb            NOT NULL,
    model        text,
    opened_at    timestamptz      NOT NULL,
    status       text             NOT NULL DEFAULT 'open',
    decided_at   timestamptz,
    decided_by   text,
    PRIMARY KEY (event_id, candidate_id)
);
CREATE INDEX identity_reviews_open ON identity_reviews (opened_at) WHERE status = 'open';
CREATE INDEX identity_reviews_by_identity ON identity_reviews (identity_id);
CREATE INDEX identity_reviews_by_candidate ON identity_reviews (candidate_id);

-- Every link and unlink, in log order (the matcher's and the stewards'), for the audit of
-- identity decisions.
CREATE TABLE identity_decisions (
    event_id     text PRIMARY KEY,
    decided_at   timestamptz NOT NULL,
    action       text        NOT NULL,
    identity_id  uuid        NOT NULL,
    other_id     uuid,
    decided_by   text        NOT NULL,
    decider_role text        NOT NULL,
    score        double precision,
    comparison   jsonb
);
CREATE INDEX identity_decisions_by_identity ON identity_decisions (identity_id, decided_at);

-- Search finds an enterprise patient through any identity linked into it.
CREATE INDEX patients_merged_into ON patients (merged_into) WHERE merged_into IS NOT NULL;
