-- 0002_race_fixes: the fixes of the first adversarial review.
--
-- Invariants added to those of 0001 (every function below keeps them):
--   * extend() takes the lock row before it decides, like every other state change,
--     so an acquire can never read a lease as expired while its extension is pending.
--   * Times written into leases are clock_timestamp() (when the row lock was held),
--     never now() (the start of a transaction that may have waited): a grant made
--     after a long wait is not born already expired. Expiry *decisions* may use any
--     of now() <= statement_timestamp() <= clock_timestamp(): each is at or before the
--     real present, so "expired" is never said too early.
--   * The client learns how long a lease has left from the database
--     (queries.sql adds remaining_ms = expires_at - clock_timestamp() to every lease
--     row), counted from before it sent the request: its estimate errs early, always.
--   * A statement run inside the caller's own transaction never changes its
--     durability (the transaction-local flag omninode.durable, set by
--     acquire_in_txn / release(.., false), turns _lazy_commit off), and a refused
--     in-transaction acquire leaves no row lock behind (a subtransaction is rolled back).
--   * Waiter counters change only by what a statement really deleted or inserted.
--   * Promotion looks at the queue head only: expired or dead waiters are dropped as
--     they reach the head, so a release costs O(granted + dropped), not O(queue).

-- Honour omninode.durable (a caller's transaction) and omninode.granted.
CREATE OR REPLACE FUNCTION __schema__._lazy_commit() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('omninode.granted', true), '') = ''
       AND coalesce(current_setting('omninode.durable', true), '') = '' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION __schema__._grant(
    p_name text, p_lease_id uuid, p_owner text, p_mode text,
    p_ttl_ms integer, p_metadata jsonb, p_waited boolean
) RETURNS __schema__.leases LANGUAGE plpgsql AS $$
DECLARE
    l __schema__.leases;
    v_token bigint;
    v_at timestamptz := clock_timestamp();
BEGIN
    UPDATE __schema__.locks SET fence = nextval('__schema__.fence_seq'), touched_at = v_at
     WHERE name = p_name
    RETURNING fence INTO v_token;
    WITH ins AS (
        INSERT INTO __schema__.leases
               (lease_id, name, owner_id, mode, token, ttl_ms, acquired_at, expires_at, metadata)
        VALUES (p_lease_id, p_name, p_owner, p_mode, v_token, p_ttl_ms, v_at,
                v_at + p_ttl_ms * interval '1 millisecond', p_metadata)
        RETURNING *
    ), ev AS (
        INSERT INTO __schema__.events (event_type, lock_name, owner_id, lease_id, token, payload)
        SELECT 'lock_acquired', name, owner_id, lease_id, token,
               jsonb_build_object('mode', mode, 'ttl_ms', ttl_ms, 'waited', p_waited)
          FROM ins
    )
    SELECT * INTO l FROM ins;
    PERFORM set_config('omninode.granted', 'on', true);
    -- a grant always commits durably, even if this transaction asked for lazy commit
    PERFORM set_config('synchronous_commit', 'on', true);
    RETURN l;
END
$$;

-- A waiter whose listening backend is gone is an orphan: its process may have crashed,
-- or may be reconnecting its listener (then it tells us its new pid and the orphan mark
-- is cleared). Orphans keep their place but are skipped; after ORPHAN_GRACE they go.
ALTER TABLE __schema__.waiters ADD COLUMN orphaned_at timestamptz;

-- Whether a waiter cannot be served now: its deadline passed or its listener is gone.
CREATE FUNCTION __schema__._waiter_dead(w __schema__.waiters) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT w.wait_until <= now()
        OR (w.listener_pid IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(w.listener_pid)))
$$;

-- Grant queued waiters of one lock in FIFO order while they are compatible. Waiters
-- that gave up or whose listener died are dropped as they reach the head. Each grant is
-- announced on the channel of the waiter's listener. Caller holds the lock row. Keeps
-- the counters right for what it changes itself; a caller that deleted leases or
-- waiters before calling it recounts with _count().
CREATE OR REPLACE FUNCTION __schema__._promote(p_name text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    k record;
    h record;
    w __schema__.waiters;
    l __schema__.leases;
    v_dropped integer := 0;
    v_exclusive integer := 0;
    v_shared integer := 0;
BEGIN
    SELECT * INTO h FROM __schema__._holders(p_name);
    IF h.n_expired > 0 THEN
        PERFORM __schema__._reap(p_name);
    END IF;
    SELECT permits INTO k FROM __schema__.locks WHERE name = p_name;
    FOR w IN SELECT * FROM __schema__.waiters WHERE name = p_name ORDER BY seq LOOP
        IF __schema__._waiter_dead(w) THEN
            IF w.wait_until > now() AND w.orphaned_at IS NULL THEN
                UPDATE __schema__.waiters SET orphaned_at = now() WHERE waiter_id = w.waiter_id;
                CONTINUE;  -- its listener may be reconnecting: skip it, keep its place
            ELSIF w.wait_until > now() AND w.orphaned_at > now() - interval '3 seconds' THEN
                CONTINUE;
            END IF;
            DELETE FROM __schema__.waiters WHERE waiter_id = w.waiter_id;
            v_dropped := v_dropped + 1;
            CONTINUE;
        END IF;
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

-- Serialise deadlock checks across all instances, then look for a cycle; on one,
-- record deadlock_detected and return the path. An owner that waits for a lock it
-- already holds in a conflicting mode (a shared -> exclusive upgrade, or a second
-- exclusive request without reentrant) waits for itself: that is reported too.
CREATE OR REPLACE FUNCTION __schema__._deadlock(p_owner text, p_name text, p_mode text, p_seq bigint)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    v_path text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM __schema__.leases
                    WHERE owner_id = p_owner AND expires_at > now()) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM __schema__.leases l JOIN __schema__.locks k ON k.name = l.name
                WHERE l.name = p_name AND l.owner_id = p_owner AND l.expires_at > now()
                  AND ((k.permits = 1 AND (l.mode = 'exclusive' OR p_mode = 'exclusive'))
                       OR (l.mode = 'shared' AND p_mode = 'exclusive'))) THEN
        v_path := ARRAY[p_owner, p_owner];
    ELSE
        PERFORM pg_advisory_xact_lock(hashtext('__schema__'), 1919);
        v_path := __schema__._cycle(p_owner, p_name, p_mode, p_seq);
    END IF;
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
-- earlier grant or queue entry instead of acting twice. A semaphore's permits are
-- fixed when the lock row is created; asking with other permits is an error.
CREATE OR REPLACE FUNCTION __schema__.acquire(
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
    IF FOUND THEN  -- a retry finds its own grant; someone else's lease id is refused
        IF l.name <> p_name OR l.owner_id <> p_owner OR l.mode <> p_mode THEN
            RETURN __schema__._bare('invalid', p_name, NULL,
                'lease_id is already the id of another request''s lease');
        END IF;
        RETURN __schema__._result('granted', l, NULL, 'retry');
    END IF;
    IF EXISTS (SELECT 1 FROM __schema__.events
                WHERE lease_id = p_lease_id
                  AND event_type IN ('lock_released', 'lock_expired', 'lock_force_released')) THEN
        RETURN __schema__._bare('invalid', p_name, NULL,
            'lease_id was used by a lease that has ended; choose a new one');
    END IF;
    INSERT INTO __schema__.locks AS t (name, permits)
    VALUES (p_name, coalesce(p_permits, 1))
    ON CONFLICT (name) DO UPDATE SET touched_at = now()
    RETURNING * INTO k;
    IF p_permits IS NOT NULL AND p_permits <> k.permits THEN
        PERFORM __schema__._lazy_commit();
        RETURN __schema__._bare('invalid', p_name, NULL,
            format('lock %s is declared with permits=%s; cannot acquire it with permits=%s',
                   p_name, k.permits, p_permits));
    END IF;
    IF p_wait_ms > 0 AND EXISTS (SELECT 1 FROM __schema__.waiters WHERE waiter_id = p_lease_id) THEN
        RETURN __schema__.poll_wait(p_lease_id);
    END IF;

    IF p_reentrant AND p_mode = 'exclusive' THEN
        UPDATE __schema__.leases
           SET hold_count = hold_count + 1,
               expires_at = greatest(expires_at, clock_timestamp() + p_ttl_ms * interval '1 millisecond')
         WHERE lease_id = (SELECT lease_id FROM __schema__.leases
                            WHERE name = p_name AND owner_id = p_owner AND mode = 'exclusive'
                              AND expires_at > clock_timestamp() LIMIT 1)
        RETURNING * INTO l;
        IF FOUND THEN
            PERFORM set_config('omninode.granted', 'on', true);
            RETURN __schema__._result('granted', l, NULL, 'reentered');
        END IF;
    END IF;

    SELECT * INTO h FROM __schema__._holders(p_name);
    v_queued := k.n_waiting > 0 AND EXISTS (SELECT 1 FROM __schema__.waiters WHERE name = p_name);
    IF v_queued AND __schema__._compatible(p_mode, k.permits, h.n_exclusive, h.n_shared) THEN
        -- The lock has room yet a queue: promote it (drops dead waiters, grants live
        -- ones) before deciding, so a crashed waiter never blocks the lock.
        PERFORM __schema__._promote(p_name);
        SELECT * INTO h FROM __schema__._holders(p_name);
        -- orphans (listener gone, see _promote) do not make a newcomer queue behind them
        v_queued := EXISTS (SELECT 1 FROM __schema__.waiters
                             WHERE name = p_name AND orphaned_at IS NULL);
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

-- Try-lock inside the caller's own transaction: keeps the caller's durability, and a
-- refusal rolls back its subtransaction, so the lock row is not left locked until the
-- caller commits (ON CONFLICT DO UPDATE locks the row even when nothing is granted).
CREATE FUNCTION __schema__.acquire_in_txn(
    p_name text, p_lease_id uuid, p_owner text, p_mode text, p_ttl_ms integer,
    p_permits integer, p_reentrant boolean, p_metadata jsonb
) RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    r __schema__.lock_result;
BEGIN
    PERFORM set_config('omninode.durable', 'on', true);
    BEGIN
        r := __schema__.acquire(p_name, p_lease_id, p_owner, p_mode, p_ttl_ms, 0, p_permits,
                                p_reentrant, p_metadata, NULL);
        IF r.status <> 'granted' THEN
            RAISE SQLSTATE 'OMN01';  -- undo the refusal's row lock (and its touch)
        END IF;
    EXCEPTION WHEN SQLSTATE 'OMN01' THEN
        NULL;  -- r keeps the refusal to report
    END;
    RETURN r;
END
$$;

-- A waiter's re-check. Cheap when nothing can change: it takes the lock row only
-- when the queue can make progress (an expired lease, a compatible or dead head), and
-- then without waiting (SKIP LOCKED: whoever holds the row promotes the queue itself).
CREATE OR REPLACE FUNCTION __schema__.poll_wait(p_waiter_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    w __schema__.waiters;
    l __schema__.leases;
    h record;
BEGIN
    SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_waiter_id;
    IF FOUND THEN
        RETURN __schema__._result('granted', l, NULL, NULL);
    END IF;
    SELECT * INTO w FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
    IF NOT FOUND THEN
        RETURN __schema__._bare('gone', NULL, NULL, 'no such waiter');
    END IF;
    IF __schema__._can_progress(w.name) THEN
        PERFORM 1 FROM __schema__.locks WHERE name = w.name FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM __schema__._promote(w.name);
            SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_waiter_id;
            IF FOUND THEN
                RETURN __schema__._result('granted', l, NULL, NULL);
            END IF;
            IF NOT EXISTS (SELECT 1 FROM __schema__.waiters WHERE waiter_id = p_waiter_id) THEN
                PERFORM __schema__._lazy_commit();
                RETURN __schema__._bare('gone', w.name, NULL, 'waiter dropped');
            END IF;
        END IF;
    END IF;
    SELECT * INTO h FROM __schema__._holders(w.name);
    PERFORM __schema__._lazy_commit();
    RETURN __schema__._bare('queued', w.name, h.next_expiry_ms, NULL);
END
$$;

-- Whether promoting the queue of p_name could grant or drop something now: a lease
-- has expired, or the head waiter is dead or compatible with the live holders.
CREATE FUNCTION __schema__._can_progress(p_name text) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    h record;
    w __schema__.waiters;
    v_permits integer;
BEGIN
    SELECT * INTO h FROM __schema__._holders(p_name);
    IF h.n_expired > 0 THEN
        RETURN true;
    END IF;
    SELECT * INTO w FROM __schema__.waiters WHERE name = p_name ORDER BY seq LIMIT 1;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT permits INTO v_permits FROM __schema__.locks WHERE name = p_name;
    RETURN __schema__._waiter_dead(w)
        OR __schema__._compatible(w.mode, v_permits, h.n_exclusive, h.n_shared);
END
$$;

-- One process's safety re-check for all of its waiters at once (run by its listener):
-- promote the locks whose queues can make progress, then report, for each waiter id,
-- its lease if granted, or 'gone' if it is neither granted nor queued. Queued waiters
-- come back as 'queued' with the time until the next blocking lease expires.
CREATE FUNCTION __schema__.poll_waiters(p_ids uuid[])
RETURNS SETOF __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_id uuid;
    l __schema__.leases;
    h record;
BEGIN
    FOR v_name IN SELECT DISTINCT name FROM __schema__.waiters WHERE waiter_id = ANY (p_ids) LOOP
        IF __schema__._can_progress(v_name) THEN
            PERFORM 1 FROM __schema__.locks WHERE name = v_name FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                PERFORM __schema__._promote(v_name);
            END IF;
        END IF;
    END LOOP;
    FOREACH v_id IN ARRAY p_ids LOOP
        SELECT * INTO l FROM __schema__.leases WHERE lease_id = v_id;
        IF FOUND THEN
            RETURN NEXT __schema__._result('granted', l, NULL, NULL);
            CONTINUE;
        END IF;
        SELECT name INTO v_name FROM __schema__.waiters WHERE waiter_id = v_id;
        IF NOT FOUND THEN
            RETURN NEXT ROW('gone', NULL, v_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                            NULL, NULL)::__schema__.lock_result;
            CONTINUE;
        END IF;
        SELECT * INTO h FROM __schema__._holders(v_name);
        RETURN NEXT ROW('queued', v_name, v_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                        h.next_expiry_ms, NULL)::__schema__.lock_result;
    END LOOP;
    PERFORM __schema__._lazy_commit();
END
$$;

-- Stop waiting. If the grant raced ahead of the cancel, the lease is returned. The
-- waiter count drops only if this call really removed the waiter row.
CREATE OR REPLACE FUNCTION __schema__.cancel_wait(p_waiter_id uuid)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_gone integer;
    l __schema__.leases;
BEGIN
    SELECT name INTO v_name FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
    IF FOUND THEN
        PERFORM 1 FROM __schema__.locks WHERE name = v_name FOR UPDATE;
        DELETE FROM __schema__.waiters WHERE waiter_id = p_waiter_id;
        GET DIAGNOSTICS v_gone = ROW_COUNT;
        IF v_gone > 0 THEN
            UPDATE __schema__.locks SET n_waiting = n_waiting - 1 WHERE name = v_name;
            -- the cancelled waiter may have been the head blocking compatible followers
            PERFORM __schema__._promote(v_name);
        END IF;
    END IF;
    SELECT * INTO l FROM __schema__.leases WHERE lease_id = p_waiter_id;
    IF FOUND THEN
        RETURN __schema__._result('granted', l, NULL, NULL);
    END IF;
    PERFORM __schema__._lazy_commit();
    RETURN __schema__._bare('cancelled', v_name, NULL, NULL);
END
$$;

-- Release. p_lazy = false inside the caller's own transaction: never touch its durability.
DROP FUNCTION __schema__.release(uuid);
CREATE FUNCTION __schema__.release(p_lease_id uuid, p_lazy boolean DEFAULT true)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_waiting integer;
    l __schema__.leases;
BEGIN
    IF NOT p_lazy THEN
        PERFORM set_config('omninode.durable', 'on', true);
    END IF;
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
                   (extract(epoch FROM clock_timestamp() - acquired_at) * 1000)::bigint)
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
    ELSIF p_lazy THEN
        PERFORM set_config('synchronous_commit', 'off', true);  -- nothing granted
    END IF;
    RETURN __schema__._result('released', l, NULL, NULL);
END
$$;

-- Extend a live lease. Takes the lock row first (the rule every state change keeps),
-- then decides by the database clock at that moment.
CREATE OR REPLACE FUNCTION __schema__.extend(p_lease_id uuid, p_ttl_ms integer)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    l __schema__.leases;
    v_name text;
BEGIN
    SELECT k.name INTO v_name FROM __schema__.locks k
     WHERE k.name = (SELECT name FROM __schema__.leases WHERE lease_id = p_lease_id)
       FOR UPDATE OF k;
    IF FOUND THEN
        -- lock the lease row too before reading the clock: a qualification checked
        -- before waiting for a row lock is not checked again after it
        PERFORM 1 FROM __schema__.leases WHERE lease_id = p_lease_id FOR UPDATE;
        WITH upd AS (
            UPDATE __schema__.leases
               SET expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond',
                   ttl_ms = p_ttl_ms
             WHERE lease_id = p_lease_id AND expires_at > clock_timestamp()
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
            RETURN __schema__._bare('expired', v_name, NULL, NULL);
        END IF;
    END IF;
    RETURN __schema__._lease_history(p_lease_id);
END
$$;

-- Why a lease id is not live: already released (idempotent success), expired, or not
-- held (never granted, or force-released). The status says which; detail is for people.
CREATE OR REPLACE FUNCTION __schema__._lease_history(p_lease_id uuid)
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
        CASE e.event_type WHEN 'lock_released' THEN 'already_released'
                          WHEN 'lock_expired' THEN 'expired'
                          ELSE 'not_held' END,
        e.lock_name, NULL,
        CASE e.event_type WHEN 'lock_force_released'
             THEN 'force-released: ' || coalesce(e.payload ->> 'reason', '')
             WHEN 'lock_released' THEN 'already released' END);
END
$$;
