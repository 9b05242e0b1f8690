-- 0003_event_relay: what the outbox relay and the event feed need (omninode_bridge.events).
--
-- __schema__ is replaced by the validated, quoted schema identifier before this file runs.
--
-- Nothing here changes the engine's functions. The engine keeps inserting event rows as
-- before; this adds, on the events table:
--   * event_id: a random UUID per event, the stable identity a consumer de-duplicates on.
--     Rows written before this migration keep NULL and the relay derives their id
--     from (stream_id, id) - see events/envelope.py. Adding the column without a default
--     and then setting one keeps this migration instant on a big table.
--   * correlation_id: filled from the transaction-local setting omninode.correlation_id
--     when the writer set one (SELECT set_config('omninode.correlation_id', $1, true) in
--     the same transaction as the lock call), else NULL. The engine's functions need no
--     change for it.
--   * a partial index over the rows not yet relayed, which is how a relay claims the
--     oldest ones (FOR UPDATE SKIP LOCKED) without scanning the relayed history;
--   * a statement-level trigger that NOTIFYs <schema>_outbox when rows are inserted and
--     a sleeping relay or follower armed it (see outbox_wake below), so that one wakes
--     when the writing transaction commits (NOTIFY is delivered at commit, never for a
--     rolled-back transaction).
-- and two small tables: the stream identity and the relays that ever registered
-- (while one is registered, pruning keeps the events no relay has delivered yet).

ALTER TABLE __schema__.events ADD COLUMN event_id uuid;
ALTER TABLE __schema__.events ALTER COLUMN event_id SET DEFAULT md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text)::uuid;
DO $$
BEGIN
    -- gen_random_uuid() is built in from PostgreSQL 13 (a strong random UUID v4)
    IF current_setting('server_version_num')::integer >= 130000 THEN
        ALTER TABLE __schema__.events ALTER COLUMN event_id SET DEFAULT gen_random_uuid();
    END IF;
END
$$;

ALTER TABLE __schema__.events ADD COLUMN correlation_id text
    DEFAULT nullif(current_setting('omninode.correlation_id', true), '');

CREATE INDEX events_unrelayed_idx ON __schema__.events (id) WHERE relayed_at IS NULL;

CREATE TABLE __schema__.outbox_stream (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    stream_id  uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO __schema__.outbox_stream (stream_id)
VALUES (md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text)::uuid);

CREATE TABLE __schema__.outbox_relays (
    relay_id   text PRIMARY KEY,
    sink       text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now(),
    relayed    bigint NOT NULL DEFAULT 0
);

-- Wake-ups. A NOTIFY costs every notifying commit a cluster-wide lock held through its
-- commit (PostgreSQL serialises notifying commits), so the trigger notifies only when a
-- listener has armed the flag before going to sleep: the first commit after that
-- disarms it and notifies; while relays and followers are busy (under load) no commit
-- notifies at all, and the check is one read of a one-row table. Disarming never
-- waits (SKIP LOCKED): if another transaction is disarming, that one notifies.
CREATE TABLE __schema__.outbox_wake (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    armed     boolean NOT NULL DEFAULT false
);
INSERT INTO __schema__.outbox_wake (armed) VALUES (false);

CREATE FUNCTION __schema__._outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT armed FROM __schema__.outbox_wake) THEN
        PERFORM 1 FROM __schema__.outbox_wake WHERE armed FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            UPDATE __schema__.outbox_wake SET armed = false;
            PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_outbox_notify AFTER INSERT ON __schema__.events
    FOR EACH STATEMENT EXECUTE FUNCTION __schema__._outbox_notify();
