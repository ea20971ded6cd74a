-- Which log the views were built from. Offsets mean something only in the log they were taken
-- from: after the topics were deleted and re-created, or with another broker behind the same
-- database, the stored offsets point into a different log (or beyond its end) and applying from
-- them would mix two logs or show nothing new while looking healthy. The projector records the
-- first record it applied from each partition (its offset and a SHA-256 of its key and payload,
-- never the payload itself) and the cluster id the broker reports, compares them at start and
-- whenever a partition's end is behind the next offset to apply, and refuses another log
-- (`/healthz` 503, nothing applied). The way out is a rebuild from the log there is:
-- `SELECT hie_forget_log()` (below), or a new database.
CREATE TABLE log_identity (
    topic             text        NOT NULL,
    partition         integer     NOT NULL,
    first_offset      bigint      NOT NULL,
    first_fingerprint bytea       NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- One row: the cluster id the broker reported when the views were first built (Kafka's
-- Metadata ClusterId), when it reports one.
CREATE TABLE log_cluster (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    cluster_id  text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The operator's way out when the projector refuses the log (or to rebuild for any reason): empty
-- every table the projector derives from the log, its offsets and the log's identity with them, in
-- one statement. Stop every projector first; started again, it replays the log there is from
-- offset 0. The query API's credential store (portal_credentials, portal_resets) is not the log's
-- and stays.
CREATE FUNCTION hie_forget_log() RETURNS void LANGUAGE sql AS $$
    TRUNCATE projection_offsets, log_identity, log_cluster, sources, patients, patient_identifiers,
             records, consents, dead_letters, quarantine, break_glass, access_log, patient_links,
             identity_reviews, identity_decisions;
$$;
