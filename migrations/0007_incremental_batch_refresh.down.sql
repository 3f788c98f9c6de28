-- Back to 0005's routine, which recounts every call; the stored counts stay exact (the
-- recount agrees with them).
DROP FUNCTION callbridge_refresh_batch(INTEGER, INTEGER, INTEGER);
DROP FUNCTION callbridge_call_count_kind(TEXT);

CREATE FUNCTION callbridge_refresh_batch(p_batch_id INTEGER) RETURNS VARCHAR
LANGUAGE plpgsql
AS $$
DECLARE
    forward_order CONSTANT TEXT[] := ARRAY['pending', 'submitted', 'in_progress', 'completed'];
    batch           RECORD;
    completed_count INTEGER;
    failed_count    INTEGER;
    logged_count    INTEGER;
    queue_rows      INTEGER;
    queue_waiting   INTEGER;
    queue_failed    INTEGER;
    queue_accepted  INTEGER;
    total           INTEGER;
    candidate       VARCHAR(50);
    new_status      VARCHAR(50);
BEGIN
    -- Row lock: serialises refreshes of one batch across persister replicas and the
    -- submitter, so the last refresher to commit has counted every row committed before it.
    SELECT batch_status, total_calls, submitted_at, completed_at
      INTO batch
      FROM call_batches
     WHERE batch_id = p_batch_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    total := coalesce(batch.total_calls, 0);

    SELECT count(*) FILTER (WHERE call_status = 'completed'),
           count(*) FILTER (WHERE call_status IN ('failed', 'busy', 'no_answer', 'timeout')),
           count(*)
      INTO completed_count, failed_count, logged_count
      FROM call_logs
     WHERE batch_id = p_batch_id;

    SELECT count(*),
           count(*) FILTER (WHERE queue_status IN ('pending', 'submitting')),
           count(*) FILTER (WHERE queue_status = 'failed'),
           count(*) FILTER (WHERE queue_status = 'submitted')
      INTO queue_rows, queue_waiting, queue_failed, queue_accepted
      FROM local_call_queue
     WHERE batch_id = p_batch_id;

    IF queue_rows > 0 AND queue_failed = queue_rows AND total = 0 AND logged_count = 0 THEN
        candidate := 'failed';
    ELSIF queue_waiting = 0 AND total > 0 AND completed_count + failed_count >= total THEN
        candidate := 'completed';
    ELSIF logged_count > 0 THEN
        candidate := 'in_progress';
    ELSIF total > 0 OR queue_accepted > 0 THEN
        candidate := 'submitted';
    ELSE
        candidate := 'pending';
    END IF;

    IF batch.batch_status IN ('completed', 'failed') THEN
        new_status := batch.batch_status;
    ELSIF candidate = 'failed'
       OR coalesce(array_position(forward_order, candidate::TEXT), 0)
          > coalesce(array_position(forward_order, batch.batch_status::TEXT), 0) THEN
        new_status := candidate;
    ELSE
        new_status := batch.batch_status;
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
