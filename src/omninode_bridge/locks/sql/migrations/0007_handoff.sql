-- Migration 0007: a cheaper hand-off.
--
-- __schema__ is replaced by the validated, quoted schema identifier before this file runs.
--
-- A release that hands a lock on spent most of its server time outside its own rows
-- (track_functions, PostgreSQL 15, 8 clients on one lock holding 5 ms): _holders, the
-- live/expired count of the lock's leases, took 117 us a call, twice per hand-off (the
-- release's promotion and the next waiter's queue entry). Every grant of a busy lock
-- inserts a lease row under the same name and every release deletes it, so
-- leases_name_idx holds one dead entry per past grant of that name until VACUUM. The
-- planner reads the name through a bitmap scan, which visits every such entry and its
-- heap page and never marks one dead: after 4,000 grants one call read 4,006 entries.
--   * _holders now reads by a plain index scan, which marks entries dead once no
--     snapshot can see them, so later scans skip them;
--   * a release whose lock row counts no lease left after its own (the exclusive
--     hand-off; the counters equal the rows, the invariant every statement keeps)
--     grants the head of the queue in one statement (_grant_head), with nothing to
--     count or reap: the promotion loop ran about twelve statements and a count for
--     one grant (the waiter cursor, the alive
--     check, the grant's lock row, lease and event, two settings, the waiter's delete,
--     the NOTIFY, the counters), 0.5 ms of server time per hand-off under load. A head
--     that is not plainly grantable (gone, expired, its listener dead) and a grant that
--     may be followed by others (a shared head, a semaphore) still go through the loop.

CREATE OR REPLACE FUNCTION __schema__._holders(p_name text, OUT n_exclusive integer, OUT n_shared integer,
                                               OUT n_expired integer, OUT next_expiry_ms integer)
LANGUAGE plpgsql STABLE SET enable_bitmapscan = off AS $$
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

-- Grant the head of p_name's queue in one statement, if it can be granted plainly: the
-- lock has no lease (the caller knows), so any mode fits; the head is still
-- within its wait and its listener is alive (what _waiter_dead tests). Does what the
-- promotion loop and _grant do for one waiter: a token drawn under the lock row (held by
-- the caller), lease and lock_acquired event (with the correlation id the waiter queued
-- with), the waiter row deleted, the counters moved, the NOTIFY to its listener, and the
-- commit made durable. Returns whether others may follow (a shared head, a semaphore):
-- then the caller runs the loop as well; NULL when nothing was granted.
CREATE FUNCTION __schema__._grant_head(p_name text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_more boolean;
    v_done text;
BEGIN
    WITH w AS (
        SELECT * FROM __schema__.waiters WHERE name = p_name ORDER BY seq LIMIT 1
    ), ok AS (
        SELECT * FROM w
         WHERE wait_until > now()
           AND (listener_pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_get_activity(listener_pid)))
    ), k AS (
        UPDATE __schema__.locks t
           SET fence = nextval('__schema__.fence_seq'), touched_at = clock_timestamp(),
               n_exclusive = t.n_exclusive + (ok.mode = 'exclusive')::integer,
               n_shared = t.n_shared + (ok.mode = 'shared')::integer,
               n_waiting = t.n_waiting - 1
          FROM ok
         WHERE t.name = p_name
        RETURNING t.fence, t.permits, clock_timestamp() AS at
    ), gone AS (
        DELETE FROM __schema__.waiters d USING ok WHERE d.waiter_id = ok.waiter_id
    ), l AS (
        INSERT INTO __schema__.leases
               (lease_id, name, owner_id, mode, token, ttl_ms, acquired_at, expires_at, metadata)
        SELECT ok.waiter_id, p_name, ok.owner_id, ok.mode, k.fence, ok.ttl_ms, k.at,
               k.at + ok.ttl_ms * interval '1 millisecond', ok.metadata
          FROM ok, k
        RETURNING *
    ), e AS (
        INSERT INTO __schema__.events
               (event_type, lock_name, owner_id, lease_id, token, payload, correlation_id)
        SELECT 'lock_acquired', l.name, l.owner_id, l.lease_id, l.token,
               jsonb_build_object('mode', l.mode, 'ttl_ms', l.ttl_ms, 'waited', true), ok.correlation_id
          FROM l, ok
    )
    SELECT l.mode = 'shared' OR k.permits > 1,
           set_config('omninode.granted', 'on', true),
           set_config('synchronous_commit', 'on', true),  -- a grant always commits durably
           CASE WHEN ok.listener_pid IS NOT NULL THEN pg_notify('__channel___' || ok.listener_pid,
               json_build_object(
                   'lease_id', l.lease_id, 'lock_name', l.name, 'owner_id', l.owner_id, 'mode', l.mode,
                   'token', l.token, 'hold_count', l.hold_count, 'ttl_ms', l.ttl_ms,
                   'acquired_at', l.acquired_at, 'expires_at', l.expires_at,
                   'metadata', l.metadata)::text)::text END
      INTO v_more, v_done, v_done, v_done
      FROM l, ok, k;
    RETURN v_more;
END
$$;

-- Release as in 0002; the hand-off of a lock left without leases grants the head in
-- one statement.
CREATE OR REPLACE FUNCTION __schema__.release(p_lease_id uuid, p_lazy boolean DEFAULT true)
RETURNS __schema__.lock_result LANGUAGE plpgsql AS $$
DECLARE
    v_name text;
    v_waiting integer;
    v_leases integer;
    v_more boolean;
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
    RETURNING k.name, k.n_waiting, k.n_exclusive + k.n_shared INTO v_name, v_waiting, v_leases;
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
        -- the lease is deleted and counted out: v_leases = 0 means no lease row is left
        IF v_leases = 0 THEN
            v_more := __schema__._grant_head(v_name);
        END IF;
        -- NULL: nothing granted plainly, the loop decides; true: the head was granted
        -- and more may fit (a shared head, a semaphore)
        IF v_more IS NULL OR v_more THEN
            PERFORM __schema__._promote(v_name);
        END IF;
        PERFORM __schema__._lazy_commit();  -- durable only if the lock was handed on
    ELSIF p_lazy THEN
        PERFORM set_config('synchronous_commit', 'off', true);  -- nothing granted
    END IF;
    RETURN __schema__._result('released', l, NULL, NULL);
END
$$;
