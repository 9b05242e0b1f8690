-- Migration 0005: the waiter check of every hand-off in PL/pgSQL.
--
-- _waiter_dead (0002) was a LANGUAGE sql function taking a row: PostgreSQL cannot inline
-- it, so every call from _promote and _can_progress ran the SQL-function executor
-- (parse, plan, execute): 73 us of the ~460 us a release with a hand-off spent in the
-- server (track_functions, PostgreSQL 15). The same test in PL/pgSQL, cheapest first:
-- the deadline, then whether a listener is named at all, and only then the backend
-- status (pg_stat_get_activity reads every backend's entry once per transaction).
CREATE OR REPLACE FUNCTION __schema__._waiter_dead(w __schema__.waiters) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF w.wait_until <= now() THEN
        RETURN true;
    END IF;
    IF w.listener_pid IS NULL THEN
        RETURN false;
    END IF;
    RETURN NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(w.listener_pid));
END
$$;
