-- Migration 0008: the PostgreSQL event feed serves only what a crash cannot take back.
--
-- __schema__ is replaced by the validated, quoted schema identifier before this file runs.
--
-- A release that hands nothing on commits lazily (synchronous_commit off, the engine's
-- documented contract): its lock_released event is visible before the write-ahead log
-- holding its commit is on disk. The Kafka relay waits for that flush before it publishes
-- (issue 11); the feed (GET /v1/events, SSE, omninode-lock events --follow) did not, so a
-- follower could see an event that a crash right after took back. The feed now reads,
-- with each page, whether the log is flushed past everything the page's snapshot could
-- see; when it is not, it makes one durable write here before it answers (its commit
-- record lies after every commit the page saw, and its flush carries them all).
CREATE TABLE __schema__.feed_barrier (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    written_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO __schema__.feed_barrier DEFAULT VALUES;
