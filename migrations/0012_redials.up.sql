-- Calling again: a campaign's redial policy and its cap on attempts per number per day,
-- the queue rows that repeat a call (attempt n+1 of the row they repeat), one allocator
-- of batch ids that `callbridge enqueue` and the persister's redials share, and the
-- per-batch aggregates the campaign figures (ASR, ACD, exhausted) are summed from.

-- The redial policy, one pair of columns per terminal outcome: after a call of the
-- campaign ends in that outcome, its number is called again at least `interval_secs`
-- later, while the number has had at most `retries` calls before this one in the chain
-- (busy=2x15m: the first call and two redials at most). 0 retries: never redialled.
ALTER TABLE campaigns
    ADD COLUMN redial_busy_retries SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN redial_busy_interval_secs INTEGER,
    ADD COLUMN redial_no_answer_retries SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN redial_no_answer_interval_secs INTEGER,
    ADD COLUMN redial_timeout_retries SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN redial_timeout_interval_secs INTEGER,
    ADD COLUMN redial_failed_retries SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN redial_failed_interval_secs INTEGER,
    ADD COLUMN redial_completed_retries SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN redial_completed_interval_secs INTEGER,
    -- At most this many calls to one number per day (the local day of the row's zone,
    -- else the campaign's), counting every campaign's calls to it. NULL: no cap.
    ADD COLUMN max_attempts_per_day INTEGER CHECK (max_attempts_per_day > 0),
    ADD CONSTRAINT campaigns_redial_busy CHECK (
        redial_busy_retries >= 0
        AND (redial_busy_retries = 0) = (redial_busy_interval_secs IS NULL)
        AND coalesce(redial_busy_interval_secs, 1) > 0),
    ADD CONSTRAINT campaigns_redial_no_answer CHECK (
        redial_no_answer_retries >= 0
        AND (redial_no_answer_retries = 0) = (redial_no_answer_interval_secs IS NULL)
        AND coalesce(redial_no_answer_interval_secs, 1) > 0),
    ADD CONSTRAINT campaigns_redial_timeout CHECK (
        redial_timeout_retries >= 0
        AND (redial_timeout_retries = 0) = (redial_timeout_interval_secs IS NULL)
        AND coalesce(redial_timeout_interval_secs, 1) > 0),
    ADD CONSTRAINT campaigns_redial_failed CHECK (
        redial_failed_retries >= 0
        AND (redial_failed_retries = 0) = (redial_failed_interval_secs IS NULL)
        AND coalesce(redial_failed_interval_secs, 1) > 0),
    ADD CONSTRAINT campaigns_redial_completed CHECK (
        redial_completed_retries >= 0
        AND (redial_completed_retries = 0) = (redial_completed_interval_secs IS NULL)
        AND coalesce(redial_completed_interval_secs, 1) > 0);

ALTER TABLE local_call_queue
    -- 1 for a number as enqueued; n+1 for the redial of attempt n.
    ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    -- The row this one calls again. No foreign key: retention deletes finished rows,
    -- and a redial outlives the row it repeats.
    ADD COLUMN redial_of INTEGER,
    -- The terminal status the persister settled this row's call with (redialled or not),
    -- written once: what makes `exhausted` count each number once, whatever duplicates
    -- or late events arrive.
    ADD COLUMN settled_status VARCHAR(50);

-- At most one redial of any row, whatever duplicates, orderings, replicas or crashes:
-- the second insert of a redial finds the first one here and adds nothing.
CREATE UNIQUE INDEX idx_local_queue_redial_of
    ON local_call_queue(redial_of)
    WHERE redial_of IS NOT NULL;

-- Finding a call's queue row from its callback (batch id and number) without reading
-- the batch's other rows.
CREATE INDEX idx_local_queue_batch_phone ON local_call_queue(batch_id, phone_number);

-- A number's rows across campaigns: the per-day cap counts them.
CREATE INDEX idx_local_queue_phone ON local_call_queue(phone_number);

-- One allocator of batch ids for `callbridge enqueue` and the persister's redials: a
-- sequence never hands one value out twice, whatever runs concurrently, and rolled-back
-- values are simply skipped. INTEGER: the centralized API's batch_id is 32-bit, and
-- the sequence stops with an error rather than wrap around.
CREATE SEQUENCE callbridge_batch_id_seq AS INTEGER MINVALUE 1 NO CYCLE;

-- It starts above every id already used, by callbridge or by an application's own rows.
SELECT setval('callbridge_batch_id_seq',
              least(greatest((SELECT max(batch_id) FROM call_batches),
                             (SELECT max(batch_id) FROM local_call_queue),
                             0)::BIGINT + 1,
                    2147483647),
              false);

-- `p_count` new batch ids, ascending. An id an application took for rows it inserted
-- itself (in call_batches or local_call_queue) is skipped, so its batch is never
-- shared with callbridge's.
CREATE FUNCTION callbridge_allocate_batch_ids(p_count INTEGER) RETURNS SETOF INTEGER
LANGUAGE plpgsql
AS $$
DECLARE
    candidate INTEGER;
    given     INTEGER := 0;
BEGIN
    WHILE given < p_count LOOP
        candidate := nextval('callbridge_batch_id_seq');
        IF NOT EXISTS (SELECT 1 FROM call_batches WHERE batch_id = candidate)
           AND NOT EXISTS (SELECT 1 FROM local_call_queue WHERE batch_id = candidate) THEN
            given := given + 1;
            RETURN NEXT candidate;
        END IF;
    END LOOP;
END
$$;

-- Aggregates the campaign figures are summed from, maintained by the persister in the
-- transaction that changes them (under the batch row's lock, like completed_calls):
-- the seconds of the batch's answered (completed) calls, for ACD; and its numbers whose
-- calls all ended without reaching anyone and whose redials are used up.
ALTER TABLE call_batches
    ADD COLUMN answered_seconds BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN exhausted_calls INTEGER NOT NULL DEFAULT 0;

UPDATE call_batches b
   SET answered_seconds = answered.seconds
  FROM (SELECT batch_id, sum(coalesce(duration, 0))::BIGINT AS seconds
          FROM call_logs
         WHERE call_status = 'completed' AND batch_id IS NOT NULL
         GROUP BY batch_id) AS answered
 WHERE b.batch_id = answered.batch_id;
