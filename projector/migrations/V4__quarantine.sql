-- Dead letters keep exactly the bytes received: a NUL or a Latin-1 byte is not text PostgreSQL
-- will store, and a dead letter that cannot be stored must not stop the views.
ALTER TABLE dead_letters ALTER COLUMN payload TYPE bytea USING convert_to(payload, 'UTF8');

-- Events the projector could not apply (undecodable, or refused by PostgreSQL: U+0000 in text or
-- jsonb, a violated constraint, a value too large) are set aside here and the views go on. Kept
-- with their bytes so an operator can have them applied again after fixing the cause
-- (`hiectl quarantine`). A consent set aside withholds its patient's clinical data (withholds:
-- the query API refuses while such an entry is open; patient_id NULL means "unknown patient":
-- every patient's).
ALTER TABLE projection_errors RENAME TO quarantine;
ALTER TABLE quarantine RENAME COLUMN at TO quarantined_at;
ALTER TABLE quarantine
    ADD COLUMN event_type  text    NOT NULL DEFAULT 'unknown',
    ADD COLUMN message_key bytea,
    ADD COLUMN payload     bytea,
    ADD COLUMN patient_id  uuid,
    ADD COLUMN withholds   boolean NOT NULL DEFAULT false,
    ADD COLUMN status      text    NOT NULL DEFAULT 'open',
    ADD COLUMN attempts    integer NOT NULL DEFAULT 1,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_by text;
CREATE INDEX quarantine_withholding ON quarantine (patient_id) WHERE withholds AND status = 'open';

-- Consent keeps each organization's history: every decision, in log order. The one in force is
-- chosen when read (the latest already effective, unless expired or a revocation).
ALTER TABLE consents DROP CONSTRAINT consents_pkey;
ALTER TABLE consents ADD PRIMARY KEY (event_id);
ALTER TABLE consents ADD COLUMN log_offset bigint NOT NULL DEFAULT -1;
CREATE INDEX consents_by_patient ON consents (patient_id, organization_id, log_offset);

-- Equal versions of a record (HL7 MSH-7 to the second): the later in the log wins; identical
-- content still changes nothing (see the projector's UPSERT_RECORD).
