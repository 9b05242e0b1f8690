-- Named statements of the event relay and feed (omninode_bridge.events).
-- __schema__ is replaced by the validated, quoted schema identifier; values are always
-- bind parameters. Tables and columns come from migrations 0001 and 0003.

-- name: claim_batch
-- One round of a relay, in one statement of the round's transaction: lock the oldest
-- unrelayed events that no other relay holds, in id order; leave alone (locked until
-- this transaction ends, claimed again by a later round) those for whose lock another
-- relay holds an older event; mark the rest relayed and return them as Kafka messages.
-- The relay commits only after the broker acknowledged every message, so a mark is
-- never kept for an event the broker did not get (a failed publish rolls back).
-- Only unblocked rows are published, so the events of one lock reach the broker in
-- commit order even with many relays (for one lock name, id order is commit order:
-- every event of a lock is written while holding its lock row).
-- The message value is built here as compact JSON text (concatenation with to_json for
-- the strings costs about half of json_build_object): the envelope of events/envelope.py,
-- keys sorted, occurred_at in UTC with microseconds, never the lease id. "event_id" is
-- null only for rows older than migration 0003, whose id the relay derives. The first row counts
-- what was claimed (blocked rows too) and is the only row when nothing was marked.
-- synchronous_commit off for this transaction: a mark lost in a database crash only
-- means the event is sent again (same event_id).
WITH seen AS MATERIALIZED (
    -- the log's end after this statement's snapshot, read before the statement writes
    -- anything (claimed's one-time filter, before its first row lock): every event it can
    -- claim committed below it. "durable" below: the log is flushed past that, so a crash
    -- cannot take these events back and the relay needs no barrier (relay.py)
    SELECT pg_current_wal_insert_lsn() AS lsn
), claimed AS MATERIALIZED (
    SELECT id, lock_name FROM __schema__.events
     WHERE relayed_at IS NULL AND (SELECT lsn FROM seen) IS NOT NULL
     ORDER BY id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), held_elsewhere AS MATERIALIZED (
    SELECT e.lock_name, min(e.id) AS first_id
      FROM __schema__.events e
     WHERE e.relayed_at IS NULL
       AND e.id < (SELECT max(id) FROM claimed)
       AND NOT EXISTS (SELECT 1 FROM claimed c WHERE c.id = e.id)
     GROUP BY e.lock_name
), lazy AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
), marked AS (
    UPDATE __schema__.events e SET relayed_at = now()
      FROM claimed c LEFT JOIN held_elsewhere h ON h.lock_name = c.lock_name, lazy
     WHERE e.id = c.id AND NOT coalesce(h.first_id < c.id, false) AND lazy.setting IS NOT NULL
    RETURNING e.id, e.event_type, e.event_id IS NULL AS derive_id,
              convert_to(e.lock_name, 'UTF8') AS key,
              convert_to(concat(
                  '{"correlation_id":', coalesce(to_json(e.correlation_id)::text, 'null'),
                  ',"event_id":', coalesce('"' || e.event_id::text || '"', 'null'),
                  ',"event_type":', to_json(e.event_type),
                  ',"id":', e.id,
                  ',"lock_name":', to_json(e.lock_name),
                  ',"occurred_at":"', to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                  '","owner_id":', coalesce(to_json(e.owner_id)::text, 'null'),
                  ',"payload":', e.payload - 'lease_id',
                  ',"token":', coalesce(e.token::text, 'null'),
                  '}'), 'UTF8') AS value
)
SELECT (SELECT count(*) FROM claimed)::integer AS claimed,
       pg_current_wal_flush_lsn() >= (SELECT lsn FROM seen) AS durable, m.*
  FROM (VALUES (1)) one (x) LEFT JOIN marked m ON true
 ORDER BY m.id;

-- name: register_relay
INSERT INTO __schema__.outbox_relays (relay_id, sink) VALUES ($1, $2)
ON CONFLICT (relay_id) DO UPDATE SET sink = EXCLUDED.sink, started_at = now(), seen_at = now();

-- name: relay_seen
UPDATE __schema__.outbox_relays SET seen_at = now(), relayed = $2 WHERE relay_id = $1;

-- name: relay_barrier
-- Before a round publishes: a durable commit that always writes (an upsert's update makes
-- a new row version even when nothing changes), so its flush carries the write-ahead log
-- past the commits of the events the round claimed (relay.py, durable_barrier).
INSERT INTO __schema__.outbox_relays (relay_id, sink, relayed) VALUES ($1, $2, $3)
ON CONFLICT (relay_id) DO UPDATE SET seen_at = now(), relayed = EXCLUDED.relayed;

-- name: forget_relays
DELETE FROM __schema__.outbox_relays;

-- name: relays
SELECT relay_id, sink, started_at, seen_at, relayed FROM __schema__.outbox_relays ORDER BY relay_id;

-- name: stream_id
SELECT stream_id FROM __schema__.outbox_stream;

-- name: backlog
-- Events not yet relayed (counted up to $1, so a feed with no relay stays cheap to ask)
-- and the age of the oldest, by the database clock.
SELECT (SELECT count(*) FROM (SELECT 1 FROM __schema__.events
                               WHERE relayed_at IS NULL LIMIT $1) b)::bigint AS backlog,
       coalesce(extract(epoch FROM now() - (SELECT created_at FROM __schema__.events
                                             WHERE relayed_at IS NULL ORDER BY id LIMIT 1)), 0)::float8
           AS lag_seconds,
       (SELECT max(id) FROM __schema__.events)::bigint AS last_id;

-- name: feed_page
-- "flushed": the write-ahead log is on disk past the insert position read after this
-- statement's snapshot, so past the commit of every row it returns (a lazily committed
-- release is visible before that). A row read as not flushed makes the feed write
-- durably before it answers (feed_barrier).
SELECT id, event_id, event_type, lock_name, owner_id, token, payload, created_at, correlation_id,
       pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() AS flushed
  FROM __schema__.events
 WHERE id > $1 AND ($3::text IS NULL OR lock_name = $3::text)
 ORDER BY id LIMIT $2;

-- name: feed_range
-- Events in ($1, $2], read after the barrier below ("flushed" as in feed_page).
SELECT id, event_id, event_type, lock_name, owner_id, token, payload, created_at, correlation_id,
       pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() AS flushed
  FROM __schema__.events
 WHERE id > $1 AND id <= $2 AND ($4::text IS NULL OR lock_name = $4::text)
 ORDER BY id LIMIT $3;

-- name: feed_barrier
-- A durable commit that always writes (a new row version), so its flush carries the log
-- past every commit a feed page saw (migration 0008).
UPDATE __schema__.feed_barrier SET written_at = clock_timestamp();

-- name: barrier_xid
-- An xid newer than every xid assigned before this statement (assigns one to this
-- otherwise empty transaction).
SELECT txid_current();

-- name: running_before
-- How many other transactions of this database still run with an xid older than $1
-- (32-bit xids compared modulo 2^32, as PostgreSQL does: running ones are never more
-- than 2^31 apart). Read from the process array, which is what new snapshots use.
SELECT count(*)::integer
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
   AND (backend_xid::text::bigint - $1::bigint % 4294967296 + 4294967296) % 4294967296 >= 2147483648;

-- name: last_id
SELECT coalesce(max(id), 0)::bigint FROM __schema__.events;

-- name: arm_wakeup
-- Ask the next commit with events to NOTIFY (the trigger of migration 0003 disarms).
UPDATE __schema__.outbox_wake SET armed = true WHERE NOT armed;
