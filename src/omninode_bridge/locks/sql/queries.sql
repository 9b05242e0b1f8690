-- Every statement the engine sends, by name. Loaded once by queries.py;
-- __schema__ is replaced by the validated, quoted schema identifier.

-- name: acquire_fast
-- The uncontended acquire in one statement: take the lock row and, if its counters
-- say the lock has room and nobody queues, draw a token, insert the lease and its
-- event. No token back means "not this way": the client then calls acquire().
-- Counters include expired-but-unreaped leases, so a doubt always falls back.
-- Lease times are clock_timestamp(): taken once the row lock is held.
-- $1 name, $2 lease_id, $3 owner, $4 mode, $5 ttl_ms, $6 permits or NULL, $7 metadata (JSON text),
-- $8 whether the caller chose the lease id
WITH k AS (
    INSERT INTO __schema__.locks AS t (name, permits, fence, n_exclusive, n_shared)
    SELECT $1, coalesce($6::integer, 1), nextval('__schema__.fence_seq'),
           CASE WHEN $4::text = 'exclusive' THEN 1 ELSE 0 END,
           CASE WHEN $4::text = 'shared' THEN 1 ELSE 0 END
     -- $8: the caller chose the lease id, so it may be an ended lease's (never reused);
     -- the engine's own ids are fresh UUID4s and skip the probe (AND short-circuits)
     WHERE NOT ($8::boolean AND EXISTS (
               SELECT 1 FROM __schema__.events
                WHERE lease_id = $2::uuid
                  AND event_type IN ('lock_released', 'lock_expired', 'lock_force_released')))
    ON CONFLICT (name) DO UPDATE
       SET fence = nextval('__schema__.fence_seq'),  -- drawn under the row lock
           touched_at = now(),
           n_exclusive = t.n_exclusive + excluded.n_exclusive,
           n_shared = t.n_shared + excluded.n_shared
     WHERE t.n_waiting = 0
       AND ($6::integer IS NULL OR t.permits = $6::integer)
       AND CASE WHEN $4::text = 'shared' THEN t.n_exclusive = 0
                ELSE t.n_shared = 0 AND t.n_exclusive < t.permits END
       AND NOT EXISTS (SELECT 1 FROM __schema__.leases WHERE lease_id = $2::uuid)
    RETURNING t.name, t.fence, clock_timestamp() AS at
), l AS (
    INSERT INTO __schema__.leases
           (lease_id, name, owner_id, mode, token, ttl_ms, acquired_at, expires_at, metadata)
    SELECT $2::uuid, k.name, $3::text, $4::text, k.fence, $5::integer, k.at,
           k.at + $5::integer * interval '1 millisecond', $7::text::jsonb
      FROM k
    RETURNING *
), e AS (
    INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
    SELECT 'lock_acquired', name, owner_id, lease_id, token,
           jsonb_build_object('mode', mode, 'ttl_ms', ttl_ms, 'waited', false)
      FROM l
)
-- Only what the database decided (the token and the times); name, ids, mode, TTL and
-- metadata are the request's own, so the client does not decode them back. One row
-- always: token NULL when nothing was granted. Such an attempt may still have taken the
-- lock row (ON CONFLICT locks the row before it tests its WHERE), and a transaction that
-- locked a row commits durably by default: a WAL flush for nothing, on every attempt at
-- a busy lock (measured: 453 us against 195 us). So it commits lazily; z runs first,
-- whether or not l has a row.
SELECT l.token, l.acquired_at, l.expires_at,
       floor(extract(epoch FROM l.expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM l)
                    THEN set_config('synchronous_commit', 'off', true) END AS lazy) z
  LEFT JOIN l ON true;

-- Every statement below that returns a lease adds remaining_ms: how long it has left
-- by the database clock as the statement ends. The client counts it from before it
-- sent the request, so its own deadline errs early.

-- name: acquire
SELECT r.*, floor(extract(epoch FROM r.expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.acquire($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $11) r;

-- name: acquire_in_txn
-- Try-lock inside the caller's own transaction (see the function).
SELECT r.*, floor(extract(epoch FROM r.expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.acquire_in_txn($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb) r;

-- name: poll_waiters
SELECT r.*, floor(extract(epoch FROM r.expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.poll_waiters($1::uuid[]) r;

-- name: cancel_wait
SELECT r.*, floor(extract(epoch FROM r.expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.cancel_wait($1) r;

-- name: release
-- Only what the caller reads (the outcome): the lease's other 10 columns cost the
-- client their decoding on every release.
SELECT status, lock_name, detail FROM __schema__.release($1);

-- name: release_of
-- Release, if the lease is one of lock $2 (the HTTP route names the lock): a lease of
-- another lock, live or ended, is refused and left alone. CASE evaluates only the branch
-- it takes; OFFSET 0 keeps the subquery whole, so release() runs once, not per column.
SELECT (r).status, (r).lock_name, (r).detail FROM (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM __schema__.leases WHERE lease_id = $1 AND name <> $2::text)
                  OR EXISTS (SELECT 1 FROM __schema__.events
                              WHERE lease_id = $1 AND lock_name <> $2::text
                                AND event_type IN ('lock_released', 'lock_expired', 'lock_force_released'))
                THEN __schema__._bare('not_held', $2::text, NULL, 'the lease is not one of this lock')
                ELSE __schema__.release($1) END AS r
    OFFSET 0) s;

-- name: set_correlation
-- Before a statement of a call that names a correlation id, in the same transaction:
-- the events it writes carry it (and a waiter row remembers it for its grant).
SELECT set_config('omninode.correlation_id', $1::text, true);

-- name: release_in_txn
-- Release inside the caller's own transaction: never changes its durability.
SELECT status, lock_name, detail FROM __schema__.release($1, false);

-- name: extend
SELECT r.*, floor(extract(epoch FROM r.expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.extend($1, $2) r;

-- name: extend_of
-- Extend, if the lease is one of lock $3 (as release_of).
SELECT (r).*, floor(extract(epoch FROM (r).expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM __schema__.leases WHERE lease_id = $1 AND name <> $3::text)
                      OR EXISTS (SELECT 1 FROM __schema__.events
                                  WHERE lease_id = $1 AND lock_name <> $3::text
                                    AND event_type IN ('lock_released', 'lock_expired', 'lock_force_released'))
                    THEN __schema__._bare('not_held', $3::text, NULL, 'the lease is not one of this lock')
                    ELSE __schema__.extend($1, $2) END AS r
        OFFSET 0) s;

-- name: granted_leases
-- Leases announced by NOTIFY, confirmed with how long they have left.
SELECT lease_id, name AS lock_name, owner_id, mode, token, hold_count, ttl_ms, acquired_at,
       expires_at, metadata,
       floor(extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.leases
 WHERE lease_id = ANY($1::uuid[]) AND expires_at > clock_timestamp();

-- name: locked
SELECT EXISTS (SELECT 1 FROM __schema__.leases WHERE name = $1 AND expires_at > clock_timestamp());

-- name: owned
SELECT EXISTS (SELECT 1 FROM __schema__.leases WHERE lease_id = $1 AND expires_at > clock_timestamp());

-- name: force_release
SELECT __schema__.force_release($1, $2);

-- name: cleanup_expired
SELECT __schema__.cleanup_expired();

-- name: prune
SELECT * FROM __schema__.prune($1, $2, $3);

-- name: fence_guard
SELECT __schema__.fence_guard($1, $2);

-- name: refresh_listener
UPDATE __schema__.waiters SET listener_pid = $1, orphaned_at = NULL WHERE waiter_id = ANY($2::uuid[]);

-- name: backend_pid
-- The listener's pid as the database knows it (a proxy reports its own in the protocol).
SELECT pg_backend_pid();

-- name: lock_row
SELECT name, permits, fence, created_at FROM __schema__.locks WHERE name = $1;

-- name: lock_holders
SELECT lease_id, name AS lock_name, owner_id, mode, token, hold_count, ttl_ms, acquired_at,
       expires_at, metadata,
       floor(extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint AS remaining_ms
  FROM __schema__.leases
 WHERE name = $1 AND expires_at > now()
 ORDER BY token;

-- name: lock_waiters
SELECT owner_id, mode, seq, enqueued_at,
       ceil(extract(epoch FROM now() - enqueued_at) * 1000)::bigint AS waiting_ms
  FROM __schema__.waiters
 WHERE name = $1 AND wait_until > now() AND orphaned_at IS NULL
 ORDER BY seq;

-- name: list_locks
-- $1 prefix (text or NULL), $2 owner (or NULL), $3 expiring within ms (or NULL),
-- $4 page size, $5 keyset cursor: names after this one (or NULL)
SELECT k.name, k.permits, k.fence,
       count(l.lease_id) AS holders,
       coalesce(bool_or(l.mode = 'exclusive'), false) AS exclusive,
       min(l.expires_at) AS next_expiry,
       array_remove(array_agg(DISTINCT l.owner_id), NULL) AS owners,
       (SELECT count(*) FROM __schema__.waiters w
         WHERE w.name = k.name AND w.wait_until > now() AND w.orphaned_at IS NULL) AS waiters
  FROM __schema__.locks k
  JOIN __schema__.leases l ON l.name = k.name AND l.expires_at > now()
 WHERE ($1::text IS NULL OR starts_with(k.name, $1::text))
   AND ($5::text IS NULL OR k.name > $5::text)
 GROUP BY k.name, k.permits, k.fence
HAVING ($2::text IS NULL OR bool_or(l.owner_id = $2::text))
   AND ($3::bigint IS NULL OR min(l.expires_at) <= now() + $3::bigint * interval '1 millisecond')
 ORDER BY k.name
 LIMIT $4;

-- name: counts
SELECT (SELECT count(DISTINCT name) FROM __schema__.leases WHERE expires_at > now()) AS active_locks,
       (SELECT count(*) FROM __schema__.leases WHERE expires_at > now()) AS active_leases,
       (SELECT count(*) FROM __schema__.waiters WHERE wait_until > now() AND orphaned_at IS NULL) AS waiters,
       (SELECT count(*) FROM __schema__.leases WHERE expires_at <= now()) AS expired_unreaped,
       (SELECT count(*) FROM __schema__.locks) AS known_locks;

-- name: recent_events
SELECT id, event_type, lock_name, owner_id, lease_id, token, payload, created_at
  FROM __schema__.events
 WHERE ($1::text IS NULL OR lock_name = $1::text)
 ORDER BY id DESC
 LIMIT $2;

-- name: migrations_table
CREATE TABLE IF NOT EXISTS __schema__.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version, name, checksum FROM __schema__.schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO __schema__.schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtext($1), 1917);

-- ---------------------------------------------------------------------------------
-- Event relay (omninode_bridge.events; tables from migration 0003). The relay's own
-- statements live in events/sql/queries.sql; this one is the engine's prune, keeping
-- the events no relay has delivered while any relay is registered in the database.

-- name: prune_keep_unrelayed
SELECT * FROM __schema__.prune($1, $2, $3 OR EXISTS (SELECT 1 FROM __schema__.outbox_relays));
