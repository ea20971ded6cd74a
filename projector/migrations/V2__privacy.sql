-- Break-the-Glass grants: one row per grant, for the reads it allows and the privacy officer's report.
CREATE TABLE break_glass (
    event_id        text PRIMARY KEY,
    at              timestamptz NOT NULL,
    user_id         text        NOT NULL,
    user_email      text        NOT NULL,
    organization_id text        NOT NULL,
    role            text        NOT NULL,
    patient_id      uuid        NOT NULL,
    reason          text        NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX break_glass_by_user ON break_glass (patient_id, user_id, expires_at);
CREATE INDEX break_glass_by_org ON break_glass (organization_id, at);

-- The audit trail of reads of clinical data.
CREATE TABLE access_log (
    event_id        text PRIMARY KEY,
    at              timestamptz NOT NULL,
    user_id         text        NOT NULL,
    user_email      text        NOT NULL,
    organization_id text        NOT NULL,
    role            text        NOT NULL,
    patient_id      uuid        NOT NULL,
    action          text        NOT NULL,
    basis           text        NOT NULL,
    outcome         text        NOT NULL,
    returned        bigint      NOT NULL,
    withheld        bigint      NOT NULL
);
CREATE INDEX access_log_by_patient ON access_log (patient_id, at);
