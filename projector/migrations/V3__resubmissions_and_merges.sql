-- Dead letters an operator re-submitted (hiectl dead-letters resubmit → DeadLetterResubmitted).
-- 'open' until a re-submission reached ingest; ingest's answer is kept beside it. A letter
-- rejected again stays 'resubmitted': ingest dead-lettered the input anew, that one is open.
ALTER TABLE dead_letters
    ADD COLUMN status               text NOT NULL DEFAULT 'open',
    ADD COLUMN resubmitted_at       timestamptz,
    ADD COLUMN resubmitted_position text,
    ADD COLUMN resubmit_outcome     text,
    ADD COLUMN resubmit_reason      text;
CREATE INDEX dead_letters_open ON dead_letters (status, rejected_at);

-- Patient merges (ADT^A40): the prior enterprise patient now lives on as the survivor. The prior
-- keeps its `patients` row (for the link) with merged_into set; searches skip it, its records,
-- identifiers and later records belong to the survivor. Chains are kept flat: every prior points
-- at the final survivor.
ALTER TABLE patients ADD COLUMN merged_into uuid;

CREATE TABLE patient_links (
    prior_id    uuid PRIMARY KEY,
    survivor_id uuid        NOT NULL,
    source_id   text        NOT NULL,
    merged_at   timestamptz NOT NULL,
    event_id    text        NOT NULL
);
CREATE INDEX patient_links_by_survivor ON patient_links (survivor_id);
