-- 0001_initial: tables, result type and the lock state machine.
--
-- __schema__ is replaced by the validated, quoted schema identifier and
-- __channel__ by the NOTIFY channel name before this file runs.
--
-- Invariants (every function below keeps them):
--   * All state changes of one lock name happen while holding that name's row
--     in `locks` (FOR UPDATE / ON CONFLICT DO UPDATE). That row is the mutex
--     for the lock's leases and its waiter queue.
--   * Fencing tokens come from one sequence, drawn while holding the lock row, so
--     a token is larger than every token issued before it - for this name and any
--     other - across releases, expiry, pruning of idle lock rows and restarts
--     (grants commit durably, which flushes the sequence's WAL with them).
--     locks.fence keeps the last token issued for the name.
--   * locks.n_exclusive / n_shared count the lease rows of the name (live or expired
--     but not yet reaped) by mode, and locks.n_waiting its waiter rows. They let the
--     uncontended acquire (queries.sql: acquire_fast) decide from the lock row alone.
--     Hot paths adjust them in place; slow paths recount with _count().
--   * Expiry is decided with now() (the database clock) only.
--   * A granted waiter's lease_id equals its waiter_id, so a client that lost a
--     notification finds its lease by the id it chose itself.
--   * Every grant, release, extend, expiry and force-release writes an event
--     row in the same transaction (the outbox, which doubles as lease history).

CREATE TABLE __schema__.locks (
    name        text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 255),
    permits     integer NOT NULL DEFAULT 1 CHECK (permits BETWEEN 1 AND 100000),
    fence       bigint NOT NULL DEFAULT 0,
    touched_at  timestamptz NOT NULL DEFAULT now(),
    n_exclusive integer NOT NULL DEFAULT 0,
    n_shared    integer NOT NULL DEFAULT 0,
    n_waiting   integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE __schema__.fence_seq;

CREATE TABLE __schema__.leases (
    lease_id    uuid PRIMARY KEY,
    name        text NOT NULL,
    owner_id    text NOT NULL CHECK (char_length(owner_id) BETWEEN 1 AND 255),
    mode        text NOT NULL CHECK (mode IN ('exclusive', 'shared')),
    token       bigint NOT NULL,
    hold_count  integer NOT NULL DEFAULT 1 CHECK (hold_count >= 1),
    ttl_ms      integer NOT NULL CHECK (ttl_ms BETWEEN 1000 AND 3600000),
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX leases_name_idx ON __schema__.leases (name);

CREATE TABLE __schema__.waiters (
    waiter_id    uuid PRIMARY KEY,
    seq          bigserial NOT NULL,
    name         text NOT NULL,
    owner_id     text NOT NULL,
    mode         text NOT NULL CHECK (mode IN ('exclusive', 'shared')),
    ttl_ms       integer NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    listener_pid integer,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    wait_until   timestamptz NOT NULL
);
CREATE INDEX waiters_name_seq_idx ON __schema__.waiters (name, seq);
CREATE INDEX waiters_owner_idx ON __schema__.waiters (owner_id);

CREATE TABLE __schema__.events (
    id          bigserial PRIMARY KEY,
    event_type  text NOT NULL,
    lock_name   text NOT NULL,
    owner_id    text,
    lease_id    uuid,
    token       bigint,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    relayed_at  timestamptz
);
-- Lease history (why a lease id is no longer live) needs only the ending events;
-- grants and extensions stay out of this index to keep the hot path light.
CREATE INDEX events_lease_end_idx ON __schema__.events (lease_id)
    WHERE event_type IN ('lock_released', 'lock_expired', 'lock_force_released');

-- Callers' fencing guard: the highest token seen per resource.
CREATE TABLE __schema__.fences (
    resource    text PRIMARY KEY,
    token       bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE __schema__.lock_result AS (
    status      text,
    lock_name   text,
    lease_id    uuid,
    owner_id    text,
    mode        text,
    token       bigint,
    hold_count  integer,
    ttl_ms      integer,
    acquired_at timestamptz,
    expires_at  timestamptz,
    metadata    jsonb,
    retry_ms    integer,
    detail      text
);

CREATE FUNCTION __schema__._result(p_status text, l __schema__.leases, p_retry_ms integer, p_detail text)
RETURNS __schema__.lock_result LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_status, l.name, l.lease_id, l.owner_id, l.mode, l.token, l.hold_count, l.ttl_ms,
               l.acquired_at, l.expires_at, l.metadata, p_retry_ms, p_detail)::__schema__.lock_result
$$;

CREATE FUNCTION __schema__._bare(p_status text, p_name text, p_retry_ms integer, p_detail text)
RETURNS __schema__.lock_result LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_status, p_name, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               p_retry_ms, p_detail)::__schema__.lock_result
$$;

-- Delete the expired leases of one lock, recording lock_expired. Caller holds the lock row.
CREATE FUNCTION __schema__._reap(p_name text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH gone AS (
        DELETE FROM __schema__.leases
         WHERE name = p_name AND expires_at <= now()
        RETURNING lease_id, owner_id, mode, token, expires_at
    )
    INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
    SELECT 'lock_expired', p_name, owner_id, lease_id, token,
           jsonb_build_object('mode', mode, 'expired_at', expires_at)
      FROM gone;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Issue a fencing token, insert the lease and record lock_acquired. Caller holds the
-- lock row (so tokens of one name are drawn in grant order).
CREATE FUNCTION __schema__._grant(
    p_name text, p_lease_id uuid, p_owner text, p_mode text,
    p_ttl_ms integer, p_metadata jsonb, p_waited boolean
) RETURNS __schema__.leases LANGUAGE plpgsql AS $$
DECLARE
    l __schema__.leases;
    v_token bigint;
BEGIN
    UPDATE __schema__.locks SET fence = nextval('__schema__.fence_seq'), touched_at = now()
     WHERE name = p_name
    RETURNING fence INTO v_token;
    WITH ins AS (
        INSERT INTO __schema__.leases
               (lease_id, name, owner_id, mode, token, ttl_ms, acquired_at, expires_at, metadata)
        VALUES (p_lease_id, p_name, p_owner, p_mode, v_token, p_ttl_ms, now(),
                now() + p_ttl_ms * interval '1 millisecond', p_metadata)
        RETURNING *
    ), ev AS (
        INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
        SELECT 'lock_acquired', name, owner_id, lease_id, token,
               jsonb_build_object('mode', mode, 'ttl_ms', ttl_ms, 'waited', p_waited)
          FROM ins
    )
    SELECT * INTO l FROM ins;
    PERFORM set_config('omninode.granted', 'on', true);
    RETURN l;
END
$$;

-- Live holder counts of one lock. (plpgsql, not sql: a non-inlined SQL function is
-- planned again on every call, plpgsql caches its plans per session.)
CREATE FUNCTION __schema__._holders(p_name text, OUT n_exclusive integer, OUT n_shared integer,
                                    OUT n_expired integer, OUT next_expiry_ms integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT count(*) FILTER (WHERE mode = 'exclusive' AND expires_at > now())::integer,
           count(*) FILTER (WHERE mode = 'shared' AND expires_at > now())::integer,
           count(*) FILTER (WHERE expires_at <= now())::integer,
           ceil(extract(epoch FROM min(expires_at) FILTER (WHERE expires_at > now()) - now())
                * 1000)::integer
      INTO n_exclusive, n_shared, n_expired, next_expiry_ms
      FROM __schema__.leases WHERE name = p_name;
END
$$;

-- Recount the lease and waiter rows of one lock into its counters. Caller holds the row.
CREATE FUNCTION __schema__._count(p_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE __schema__.locks k
       SET n_exclusive = c.n_exclusive, n_shared = c.n_shared, n_waiting = c.n_waiting
      FROM (SELECT count(*) FILTER (WHERE l.mode = 'exclusive')::integer AS n_exclusive,
                   count(*) FILTER (WHERE l.mode = 'shared')::integer AS n_shared,
                   (SELECT count(*) FROM __schema__.waiters w WHERE w.name = p_name)::integer
                       AS n_waiting
              FROM __schema__.leases l WHERE l.name = p_name) c
     WHERE k.name = p_name
       AND (k.n_exclusive, k.n_shared, k.n_waiting) IS DISTINCT FROM (c.n_exclusive, c.n_shared, c.n_waiting);
END
$$;

-- Let this transaction commit without waiting for the WAL flush, unless it granted a
-- lease. A lost release, queue entry or refusal is harmless after a crash (a lease
-- stays held until its TTL, a waiter re-queues); a lost grant would let a fencing
-- token be issued twice, so grants always commit durably.
CREATE FUNCTION __schema__._lazy_commit() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('omninode.granted', true), '') = '' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

CREATE FUNCTION __schema__._compatible(p_mode text, p_permits integer, n_exclusive integer,
                                       n_shared integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_mode = 'shared' THEN n_exclusive = 0
                ELSE n_shared = 0 AND n_exclusive < p_permits END
$$;

-- Grant queued waiters of one lock in FIFO order while they are compatible, dropping
-- waiters that gave up (deadline passed) or whose listening backend is gone. Each grant
-- is announced on the channel with the lease as JSON. Caller holds the lock row.
-- Keeps the counters right for what it changes itself; a caller that deleted leases
-- or waiters before calling it recounts with _count().
CREATE FUNCTION __schema__._promote(p_name text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    k record;
    h record;
    w record;
    l __schema__.leases;
    v_dropped integer;
    v_exclusive integer := 0;
    v_shared integer := 0;
BEGIN
    SELECT * INTO h FROM __schema__._holders(p_name);
    IF h.n_expired > 0 THEN
        PERFORM __schema__._reap(p_name);
    END IF;
    DELETE FROM __schema__.waiters x
     WHERE x.name = p_name
       AND (x.wait_until <= now()
            OR (x.listener_pid IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(x.listener_pid))));
    GET DIAGNOSTICS v_dropped = ROW_COUNT;
    SELECT permits INTO k FROM __schema__.locks WHERE name = p_name;
    FOR w IN SELECT * FROM __schema__.waiters WHERE name = p_name ORDER BY seq LOOP
        EXIT WHEN NOT __schema__._compatible(w.mode, k.permits, h.n_exclusive, h.n_shared);
        l := __schema__._grant(p_name, w.waiter_id, w.owner_id, w.mode, w.ttl_ms, w.metadata, true);
        DELETE FROM __schema__.waiters WHERE waiter_id = w.waiter_id;
        IF w.listener_pid IS NOT NULL THEN
            PERFORM pg_notify('__channel___' || w.listener_pid, json_build_object(
                'lease_id', l.lease_id, 'lock_name', l.name, 'owner_id', l.owner_id, 'mode', l.mode,
                'token', l.token, 'hold_count', l.hold_count, 'ttl_ms', l.ttl_ms,
                'acquired_at', l.acquired_at, 'expires_at', l.expires_at, 'metadata', l.metadata)::text);
        END IF;
        IF w.mode = 'shared' THEN
            h.n_shared := h.n_shared + 1;
            v_shared := v_shared + 1;
        ELSE
            h.n_exclusive := h.n_exclusive + 1;
            v_exclusive := v_exclusive + 1;
        END IF;
    END LOOP;
    IF h.n_expired > 0 THEN
        PERFORM __schema__._count(p_name);
    ELSIF v_dropped + v_exclusive + v_shared > 0 THEN
        UPDATE __schema__.locks
           SET n_exclusive = n_exclusive + v_exclusive,
               n_shared = n_shared + v_shared,
               n_waiting = n_waiting - v_dropped - v_exclusive - v_shared
         WHERE name = p_name;
    END IF;
    RETURN v_exclusive + v_shared;
END
$$;

-- Owners a request for (p_name, p_mode), queued at p_seq, waits for: the incompatible
-- live holders and the incompatible waiters queued before it (FIFO).
CREATE FUNCTION __schema__._blockers(p_name text, p_mode text, p_seq bigint)
RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT l.owner_id FROM __schema__.leases l
     WHERE l.name = p_name AND l.expires_at > now()
       AND (l.mode = 'exclusive' OR p_mode = 'exclusive')
    UNION
    SELECT v.owner_id FROM __schema__.waiters v
     WHERE v.name = p_name AND v.seq < p_seq AND v.wait_until > now()
       AND (v.mode = 'exclusive' OR p_mode = 'exclusive')
$$;

-- The wait-for path from the owners blocking (p_owner, p_name, p_mode) back to p_owner,
-- or NULL. Semaphores (permits > 1) are not edges: any one holder releasing frees
-- them, so they cannot close a cycle on their own. An owner never waits for itself
-- (one owner id may stand for many tasks).
CREATE FUNCTION __schema__._cycle(p_owner text, p_name text, p_mode text, p_seq bigint)
RETURNS text[] LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk(owner_id, path, depth) AS (
        SELECT b, ARRAY[p_owner, b], 1
          FROM __schema__.locks k,
               __schema__._blockers(p_name, p_mode, coalesce(p_seq, 9223372036854775807)) b
         WHERE k.name = p_name AND k.permits = 1 AND b <> p_owner
        UNION ALL
        SELECT b, wk.path || b, wk.depth + 1
          FROM walk wk
          JOIN __schema__.waiters w ON w.owner_id = wk.owner_id AND w.wait_until > now()
          JOIN __schema__.locks k ON k.name = w.name AND k.permits = 1
          CROSS JOIN LATERAL __schema__._blockers(w.name, w.mode, w.seq) b
         WHERE wk.depth < 64 AND wk.owner_id <> p_owner AND NOT b = ANY (wk.path[2:])
    )
    SELECT path FROM walk WHERE owner_id = p_owner ORDER BY depth LIMIT 1
$$;

-- Serialise deadlock checks across all instances, then look for a cycle; on one,
-- record deadlock_detected and return the path.
CREATE FUNCTION __schema__._deadlock(p_owner text, p_name text, p_mode text, p_seq bigint)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    v_path text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM __schema__.leases
                    WHERE owner_id = p_owner AND expires_at > now()) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('__schema__'), 1919);
    v_path := __schema__._cycle(p_owner, p_name, p_mode, p_seq);
    IF v_path IS NOT NULL THEN
        INSERT INTO __schema__.events (event_type, lock_name, owner_id, payload)
        VALUES ('deadlock_detected', p_name, p_owner,
                jsonb_build_object('mode', p_mode, 'cycle', to_jsonb(v_path)));
    END IF;
    RETURN v_path;
END
$$;

-- Acquire: grant now, or report busy (p_wait_ms = 0), or queue the caller as a waiter.
-- p_lease_id is chosen by the client; a retried call with the same id finds its own
-- earlier grant or queue entry instead of acting twice.
CREATE FUNCTION __schema__.acquire(
    p_name text, p_lease_id uuid, p_owner text, p_mode text, p_ttl_ms integer,
    p_wait_ms integer, p_permits integer, p_reentrant boolean, p_metadata jsonb,
    p_listener_pid integer
) RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    k __schema__.locks;
    l __schema__.leases;
    h record;
    v_path text[];
    v_queued boolean;
BEGIN
    SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_lease_id;
    IF FOUND THEN
        RETURN __schema__._result('granted', l, NULL, 'retry');
    END IF;
    INSERT INTO __schema__.locks AS t (name, permits)
    VALUES (p_name, coalesce(p_permits, 1))
    ON CONFLICT (name) DO UPDATE SET touched_at = now()
    RETURNING * INTO k;
    IF p_wait_ms > 0 AND EXISTS (SELECT 1 FROM __schema__.waiters WHERE waiter_id = p_lease_id) THEN
        RETURN __schema__.poll_wait(p_lease_id);
    END IF;

    IF p_reentrant AND p_mode = 'exclusive' THEN
        UPDATE __schema__.leases
           SET hold_count = hold_count + 1,
               expires_at = greatest(expires_at, now() + p_ttl_ms * interval '1 millisecond')
         WHERE lease_id = (SELECT lease_id FROM __schema__.leases
                            WHERE name = p_name AND owner_id = p_owner AND mode = 'exclusive'
                              AND expires_at > now() LIMIT 1)
        RETURNING * INTO l;
        IF FOUND THEN
            RETURN __schema__._result('granted', l, NULL, 'reentered');
        END IF;
    END IF;

    SELECT * INTO h FROM __schema__._holders(p_name);
    IF p_permits IS NOT NULL AND p_permits <> k.permits THEN
        IF h.n_exclusive + h.n_shared > 0 THEN
            RETURN __schema__._bare('invalid', p_name, NULL,
                format('lock %s has permits=%s while held; cannot change to %s',
                       p_name, k.permits, p_permits));
        END IF;
        UPDATE __schema__.locks SET permits = p_permits WHERE name = p_name;
        k.permits := p_permits;
    END IF;

    v_queued := EXISTS (SELECT 1 FROM __schema__.waiters WHERE name = p_name);
    IF v_queued AND __schema__._compatible(p_mode, k.permits, h.n_exclusive, h.n_shared) THEN
        -- The lock has room yet a queue: promote it (drops dead waiters, grants live
        -- ones) before deciding, so a crashed waiter never blocks the lock.
        PERFORM __schema__._promote(p_name);
        SELECT * INTO h FROM __schema__._holders(p_name);
        v_queued := EXISTS (SELECT 1 FROM __schema__.waiters WHERE name = p_name);
    END IF;

    IF NOT v_queued AND __schema__._compatible(p_mode, k.permits, h.n_exclusive, h.n_shared) THEN
        IF h.n_expired > 0 THEN
            PERFORM __schema__._reap(p_name);
        END IF;
        l := __schema__._grant(p_name, p_lease_id, p_owner, p_mode, p_ttl_ms, p_metadata, false);
        PERFORM __schema__._count(p_name);
        RETURN __schema__._result('granted', l, NULL, NULL);
    END IF;

    IF p_wait_ms <= 0 THEN
        PERFORM __schema__._lazy_commit();
        RETURN __schema__._bare('busy', p_name, h.next_expiry_ms,
            (SELECT string_agg(DISTINCT owner_id, ',') FROM __schema__.leases
              WHERE name = p_name AND expires_at > now()));
    END IF;

    v_path := __schema__._deadlock(p_owner, p_name, p_mode, NULL);
    IF v_path IS NOT NULL THEN
        PERFORM __schema__._lazy_commit();
        RETURN __schema__._bare('deadlock', p_name, NULL, array_to_string(v_path, ' -> '));
    END IF;

    INSERT INTO __schema__.waiters
           (waiter_id, name, owner_id, mode, ttl_ms, metadata, listener_pid, wait_until)
    VALUES (p_lease_id, p_name, p_owner, p_mode, p_ttl_ms, p_metadata, p_listener_pid,
            now() + (p_wait_ms + 2000) * interval '1 millisecond');
    UPDATE __schema__.locks SET n_waiting = n_waiting + 1 WHERE name = p_name;
    PERFORM __schema__._lazy_commit();
    RETURN __schema__._bare('queued', p_name, h.next_expiry_ms, NULL);
END
$$;

-- A waiter's periodic re-check: promote the queue, then report granted / queued /
-- deadlock / gone (the waiter was dropped, e.g. its deadline passed).
CREATE FUNCTION __schema__.poll_wait(p_waiter_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    w __schema__.waiters;
    l __schema__.leases;
    h record;
    v_path text[];
BEGIN
    SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_waiter_id;
    IF FOUND THEN
        RETURN __schema__._result('granted', l, NULL, NULL);
    END IF;
    SELECT * INTO w FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
    IF NOT FOUND THEN
        RETURN __schema__._bare('gone', NULL, NULL, 'no such waiter');
    END IF;
    PERFORM 1 FROM __schema__.locks WHERE name = w.name FOR UPDATE;
    PERFORM __schema__._promote(w.name);
    SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_waiter_id;
    IF FOUND THEN
        RETURN __schema__._result('granted', l, NULL, NULL);
    END IF;
    SELECT * INTO w FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
    IF NOT FOUND THEN
        PERFORM __schema__._lazy_commit();
        RETURN __schema__._bare('gone', NULL, NULL, 'waiter dropped');
    END IF;
    v_path := __schema__._deadlock(w.owner_id, w.name, w.mode, w.seq);
    IF v_path IS NOT NULL THEN
        DELETE FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
        PERFORM __schema__._count(w.name);
        PERFORM __schema__._lazy_commit();
        RETURN __schema__._bare('deadlock', w.name, NULL, array_to_string(v_path, ' -> '));
    END IF;
    SELECT * INTO h FROM __schema__._holders(w.name);
    PERFORM __schema__._lazy_commit();
    RETURN __schema__._bare('queued', w.name, h.next_expiry_ms, NULL);
END
$$;

-- Stop waiting. If the grant raced ahead of the cancel, the lease is returned.
CREATE FUNCTION __schema__.cancel_wait(p_waiter_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    l __schema__.leases;
BEGIN
    SELECT name INTO v_name FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
    IF FOUND THEN
        PERFORM 1 FROM __schema__.locks WHERE name = v_name FOR UPDATE;
        DELETE FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
        UPDATE __schema__.locks SET n_waiting = n_waiting - 1 WHERE name = v_name;
        -- the cancelled waiter may have been the head blocking compatible followers
        PERFORM __schema__._promote(v_name);
    END IF;
    SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_waiter_id;
    IF FOUND THEN
        RETURN __schema__._result('granted', l, NULL, NULL);
    END IF;
    PERFORM __schema__._lazy_commit();
    RETURN __schema__._bare('cancelled', v_name, NULL, NULL);
END
$$;

-- Why a lease id is not live: released (idempotent success), expired, or not held.
CREATE FUNCTION __schema__._lease_history(p_lease_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql STABLE AS $$
DECLARE
    e record;
BEGIN
    SELECT event_type, lock_name, payload INTO e FROM __schema__.events
     WHERE lease_id = p_lease_id
       AND event_type IN ('lock_released', 'lock_expired', 'lock_force_released')
     ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN __schema__._bare('not_held', NULL, NULL, NULL);
    END IF;
    RETURN __schema__._bare(
        CASE e.event_type WHEN 'lock_released' THEN 'released'
                          WHEN 'lock_expired' THEN 'expired'
                          ELSE 'not_held' END,
        e.lock_name, NULL,
        CASE e.event_type WHEN 'lock_force_released'
             THEN 'force-released: ' || coalesce(e.payload ->> 'reason', '')
             WHEN 'lock_released' THEN 'already released' END);
END
$$;

CREATE FUNCTION __schema__.release(p_lease_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_waiting integer;
    l __schema__.leases;
BEGIN
    -- Lock the lock row and count the lease out in one statement. If the lease row
    -- vanished meanwhile (reaped, force-released), the DELETE below finds nothing
    -- and _count() puts the counters right in this same transaction.
    UPDATE __schema__.locks k
       SET n_exclusive = k.n_exclusive - (s.mode = 'exclusive')::integer,
           n_shared = k.n_shared - (s.mode = 'shared')::integer
      FROM (SELECT name, mode FROM __schema__.leases
             WHERE lease_id = p_lease_id AND hold_count = 1) s
     WHERE k.name = s.name
    RETURNING k.name, k.n_waiting INTO v_name, v_waiting;
    IF NOT FOUND THEN
        RETURN __schema__._release_slow(p_lease_id);
    END IF;
    WITH del AS (
        DELETE FROM __schema__.leases
         WHERE lease_id = p_lease_id AND expires_at > now() AND hold_count = 1
        RETURNING *
    ), ev AS (
        INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
        SELECT 'lock_released', name, owner_id, lease_id, token,
               jsonb_build_object('mode', mode, 'held_ms',
                   (extract(epoch FROM now() - acquired_at) * 1000)::bigint)
          FROM del
    )
    SELECT * INTO l FROM del;
    IF NOT FOUND THEN  -- expired (or vanished): reap, hand the lock on, recount, report
        PERFORM __schema__._promote(v_name);
        PERFORM __schema__._count(v_name);
        PERFORM __schema__._lazy_commit();
        RETURN __schema__._lease_history(p_lease_id);
    END IF;
    IF v_waiting > 0 THEN
        PERFORM __schema__._promote(v_name);
        PERFORM __schema__._lazy_commit();  -- durable only if the lock was handed on
    ELSE
        PERFORM set_config('synchronous_commit', 'off', true);  -- nothing granted
    END IF;
    RETURN __schema__._result('released', l, NULL, NULL);
END
$$;

-- Release of a reentrant lease held more than once, or of a lease that is gone.
CREATE FUNCTION __schema__._release_slow(p_lease_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    l __schema__.leases;
BEGIN
    SELECT k.name INTO v_name FROM __schema__.locks k
     WHERE k.name = (SELECT name FROM __schema__.leases WHERE lease_id = p_lease_id)
       FOR UPDATE OF k;
    IF NOT FOUND THEN
        RETURN __schema__._lease_history(p_lease_id);
    END IF;
    UPDATE __schema__.leases SET hold_count = hold_count - 1
     WHERE lease_id = p_lease_id AND expires_at > now() AND hold_count > 1
    RETURNING * INTO l;
    IF FOUND THEN
        RETURN __schema__._result('released', l, NULL, format('still held, hold_count=%s', l.hold_count));
    END IF;
    PERFORM __schema__._promote(v_name);  -- reaps the expired lease and recounts
    RETURN __schema__._lease_history(p_lease_id);
END
$$;

CREATE FUNCTION __schema__.extend(p_lease_id uuid, p_ttl_ms integer)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    l __schema__.leases;
BEGIN
    WITH upd AS (
        UPDATE __schema__.leases
           SET expires_at = now() + p_ttl_ms * interval '1 millisecond', ttl_ms = p_ttl_ms
         WHERE lease_id = p_lease_id AND expires_at > now()
        RETURNING *
    ), ev AS (
        INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
        SELECT 'lock_extended', name, owner_id, lease_id, token,
               jsonb_build_object('ttl_ms', ttl_ms, 'expires_at', expires_at)
          FROM upd
    )
    SELECT * INTO l FROM upd;
    IF FOUND THEN
        RETURN __schema__._result('extended', l, NULL, NULL);
    END IF;
    IF EXISTS (SELECT 1 FROM __schema__.leases WHERE lease_id = p_lease_id) THEN
        RETURN __schema__._bare('expired', NULL, NULL, NULL);
    END IF;
    RETURN __schema__._lease_history(p_lease_id);
END
$$;

CREATE FUNCTION __schema__.force_release(p_name text, p_reason text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM __schema__.locks WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    WITH del AS (
        DELETE FROM __schema__.leases WHERE name = p_name RETURNING *
    )
    INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
    SELECT 'lock_force_released', name, owner_id, lease_id, token,
           jsonb_build_object('mode', mode, 'reason', p_reason)
      FROM del;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM __schema__._promote(p_name);
    PERFORM __schema__._count(p_name);
    RETURN n;
END
$$;

-- Reap every expired lease and stale waiter; skips locks busy in other transactions
-- (they are reaped at their next acquire anyway).
CREATE FUNCTION __schema__.cleanup_expired() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    n integer := 0;
BEGIN
    FOR v_name IN SELECT DISTINCT name FROM __schema__.leases WHERE expires_at <= now()
                  UNION
                  SELECT DISTINCT name FROM __schema__.waiters WHERE wait_until <= now()
    LOOP
        PERFORM 1 FROM __schema__.locks WHERE name = v_name FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            n := n + __schema__._reap(v_name);
            PERFORM __schema__._promote(v_name);
            PERFORM __schema__._count(v_name);
        END IF;
    END LOOP;
    PERFORM __schema__._lazy_commit();
    RETURN n;
END
$$;

-- Bound the tables: drop events older than p_event_retention_s (oldest first, in
-- batches, optionally keeping those not yet relayed) and idle plain lock rows not
-- used for p_idle_s (semaphores keep their permits setting). Pruning a lock row loses
-- nothing: tokens come from the sequence. Returns (events, locks) removed.
CREATE FUNCTION __schema__.prune(p_event_retention_s double precision, p_idle_s double precision,
                                 p_keep_unrelayed boolean,
                                 OUT events_pruned integer, OUT locks_pruned integer)
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    events_pruned := 0;
    FOR i IN 1..20 LOOP
        DELETE FROM __schema__.events
         WHERE id IN (SELECT id FROM __schema__.events ORDER BY id LIMIT 5000)
           AND created_at < now() - p_event_retention_s * interval '1 second'
           AND (NOT p_keep_unrelayed OR relayed_at IS NOT NULL);
        GET DIAGNOSTICS n = ROW_COUNT;
        events_pruned := events_pruned + n;
        EXIT WHEN n < 5000;
    END LOOP;
    DELETE FROM __schema__.locks
     WHERE name IN (SELECT name FROM __schema__.locks k
                     WHERE k.permits = 1 AND k.n_exclusive = 0 AND k.n_shared = 0
                       AND k.n_waiting = 0
                       AND k.touched_at < now() - p_idle_s * interval '1 second'
                       AND NOT EXISTS (SELECT 1 FROM __schema__.leases l WHERE l.name = k.name)
                       AND NOT EXISTS (SELECT 1 FROM __schema__.waiters w WHERE w.name = k.name)
                     LIMIT 10000
                       FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS locks_pruned = ROW_COUNT;
    PERFORM __schema__._lazy_commit();
END
$$;

-- Fencing guard for callers' own writes: accept p_token if it is not older than the
-- newest token seen for p_resource. Call it in the same transaction as the write.
CREATE FUNCTION __schema__.fence_guard(p_resource text, p_token bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO __schema__.fences AS f (resource, token) VALUES (p_resource, p_token)
    ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token, updated_at = now()
     WHERE f.token <= EXCLUDED.token;
    RETURN FOUND;
END
$$;
