-- callbridge_refresh_batch (0005) recounted every call_logs row and every local_call_queue
-- row of a batch on each call: O(batch size) per transaction, so the persister recounted a
-- 100,000-call campaign for every 200 events it stored. It stays the one routine that
-- decides a batch's counts and status (SPEC §6), now with two ways to get the counts:
--
-- * callbridge_refresh_batch(batch_id): recounts call_logs, as before (the submitter, which
--   changes queue rows and total_calls but never call_logs, and any caller that does not
--   know what changed);
-- * callbridge_refresh_batch(batch_id, completed_delta, failed_delta): the stored counts
--   plus what the caller's own transaction changed. The persister computes the deltas
--   from each call's row before and after its upsert, in the same transaction and under
--   the call's lock, so the old row it subtracts is the committed one. Deltas commute and
--   each is added under the batch row's lock, so after every commit the stored counts
--   equal a recount, whatever the order in which replicas commit. A stored count that is
--   NULL (set by someone else) is recounted instead.
--
-- The status decision no longer counts the queue: it asks only what it needs (does any
-- call_logs row exist; does any queue row wait, only once the counts reached total_calls;
-- are all queue rows failed, only when nothing was accepted or logged), each an index
-- probe that stops at the first row found. A batch whose status is final skips it.
--
-- This migration recounts the stored counts of every batch once, so the deltas start from
-- exact figures.

-- Which count a call_logs status goes into: 'completed', 'failed' (another terminal
-- status) or NULL. The terminal list must equal callbridge_types::CallStatus (a test in
-- callbridge-runtime checks every status against it); the persister's upsert uses this
-- function too, so the list lives here only.
CREATE FUNCTION callbridge_call_count_kind(p_call_status TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN p_call_status = 'completed' THEN 'completed'
               WHEN p_call_status IN ('failed', 'busy', 'no_answer', 'timeout') THEN 'failed'
           END
$$;

DROP FUNCTION callbridge_refresh_batch(INTEGER);

-- Returns the batch's status afterwards, or NULL when no call_batches row exists (the
-- caller creates it first: its accountcode is NOT NULL and only the caller knows it).
-- Callers run at READ COMMITTED (the default): everything is read after the row lock is
-- granted, so it includes whatever a concurrent refresher committed.
CREATE FUNCTION callbridge_refresh_batch(
    p_batch_id INTEGER,
    p_completed_delta INTEGER DEFAULT NULL,
    p_failed_delta INTEGER DEFAULT NULL
) RETURNS VARCHAR
LANGUAGE plpgsql
AS $$
DECLARE
    forward_order CONSTANT TEXT[] := ARRAY['pending', 'submitted', 'in_progress', 'completed'];
    batch           RECORD;
    completed_count INTEGER;
    failed_count    INTEGER;
    logged          BOOLEAN;
    total           INTEGER;
    candidate       VARCHAR(50);
    new_status      VARCHAR(50);
BEGIN
    -- Row lock: serialises refreshes of one batch across persister replicas and the
    -- submitter, so each one adds to (or recounts over) everything committed before it.
    SELECT batch_status, total_calls, completed_calls, failed_calls, submitted_at, completed_at
      INTO batch
      FROM call_batches
     WHERE batch_id = p_batch_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    total := coalesce(batch.total_calls, 0);

    IF p_completed_delta IS NOT NULL AND p_failed_delta IS NOT NULL
       AND batch.completed_calls IS NOT NULL AND batch.failed_calls IS NOT NULL THEN
        completed_count := batch.completed_calls + p_completed_delta;
        failed_count := batch.failed_calls + p_failed_delta;
    ELSE
        SELECT count(*) FILTER (WHERE callbridge_call_count_kind(call_status) = 'completed'),
               count(*) FILTER (WHERE callbridge_call_count_kind(call_status) = 'failed')
          INTO completed_count, failed_count
          FROM call_logs
         WHERE batch_id = p_batch_id;
    END IF;

    IF batch.batch_status IN ('completed', 'failed') THEN
        -- Final: the candidate could not change it.
        new_status := batch.batch_status;
    ELSE
        logged := completed_count + failed_count > 0
                  OR EXISTS (SELECT 1 FROM call_logs WHERE batch_id = p_batch_id);

        -- failed: the batch has queue rows, every one of them failed, total_calls = 0 and
        -- no call was ever reported for it.
        candidate := NULL;
        IF total = 0 AND NOT logged THEN
            IF EXISTS (SELECT 1 FROM local_call_queue WHERE batch_id = p_batch_id)
               AND NOT EXISTS (SELECT 1 FROM local_call_queue
                                WHERE batch_id = p_batch_id
                                  AND queue_status IS DISTINCT FROM 'failed') THEN
                candidate := 'failed';
            END IF;
        END IF;
        -- completed: no queue row of the batch still waiting (pending or submitting), and
        -- completed_calls + failed_calls reached total_calls > 0.
        IF candidate IS NULL AND total > 0 AND completed_count + failed_count >= total THEN
            IF NOT EXISTS (SELECT 1 FROM local_call_queue
                            WHERE batch_id = p_batch_id
                              AND queue_status IN ('pending', 'submitting')) THEN
                candidate := 'completed';
            END IF;
        END IF;
        IF candidate IS NULL THEN
            IF logged THEN
                candidate := 'in_progress';
            ELSIF total > 0 OR EXISTS (SELECT 1 FROM local_call_queue
                                        WHERE batch_id = p_batch_id
                                          AND queue_status = 'submitted') THEN
                candidate := 'submitted';
            ELSE
                candidate := 'pending';
            END IF;
        END IF;

        -- batch_status moves only forward, pending -> submitted -> in_progress ->
        -- completed, or to failed; an unknown or NULL status ranks below pending.
        IF candidate = 'failed'
           OR coalesce(array_position(forward_order, candidate::TEXT), 0)
              > coalesce(array_position(forward_order, batch.batch_status::TEXT), 0) THEN
            new_status := candidate;
        ELSE
            new_status := batch.batch_status;
        END IF;
    END IF;

    UPDATE call_batches
       SET completed_calls = completed_count,
           failed_calls = failed_count,
           batch_status = new_status,
           submitted_at = CASE WHEN new_status IN ('submitted', 'in_progress', 'completed')
                               THEN coalesce(batch.submitted_at, now())
                               ELSE batch.submitted_at END,
           completed_at = CASE WHEN new_status IN ('completed', 'failed')
                               THEN coalesce(batch.completed_at, now())
                               ELSE batch.completed_at END,
           updated_at = CURRENT_TIMESTAMP
     WHERE batch_id = p_batch_id
       -- A refresh that changes nothing leaves updated_at alone.
       AND (call_batches.completed_calls IS DISTINCT FROM completed_count
            OR call_batches.failed_calls IS DISTINCT FROM failed_count
            OR call_batches.batch_status IS DISTINCT FROM new_status
            OR (new_status IN ('submitted', 'in_progress', 'completed') AND batch.submitted_at IS NULL)
            OR (new_status IN ('completed', 'failed') AND batch.completed_at IS NULL));

    RETURN new_status;
END
$$;

-- The deltas start from exact figures.
UPDATE call_batches
   SET completed_calls = counted.completed_count,
       failed_calls = counted.failed_count
  FROM (SELECT b.batch_id,
               count(l.call_id) FILTER (WHERE callbridge_call_count_kind(l.call_status) = 'completed')::INTEGER
                   AS completed_count,
               count(l.call_id) FILTER (WHERE callbridge_call_count_kind(l.call_status) = 'failed')::INTEGER
                   AS failed_count
          FROM call_batches b
          LEFT JOIN call_logs l ON l.batch_id = b.batch_id
         GROUP BY b.batch_id) AS counted
 WHERE call_batches.batch_id = counted.batch_id
   AND (call_batches.completed_calls IS DISTINCT FROM counted.completed_count
        OR call_batches.failed_calls IS DISTINCT FROM counted.failed_count);
