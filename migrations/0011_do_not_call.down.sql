-- The do-not-call list is what operators were told to honour: dropping it while it holds
-- entries needs --force. Rows already `suppressed` keep that status (0009's routine
-- counts them as neither waiting nor final, so such a batch stays where it is).
SELECT callbridge_refuse_destructive_down('do_not_call', 'drop table');

DROP FUNCTION callbridge_refresh_batch(INTEGER, INTEGER, INTEGER);

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
    -- Row lock: serialises refreshes of one batch across persister replicas, the
    -- submitter and operator actions, so each one adds to (or recounts over) everything
    -- committed before it.
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

    IF batch.batch_status IN ('completed', 'failed', 'cancelled') THEN
        -- Final: the candidate could not change it.
        new_status := batch.batch_status;
    ELSE
        logged := completed_count + failed_count > 0
                  OR EXISTS (SELECT 1 FROM call_logs WHERE batch_id = p_batch_id);

        -- Nothing accepted, nothing reported, and no row left that could still be sent:
        -- cancelled when every row was cancelled, else failed (one row at least failed).
        candidate := NULL;
        IF total = 0 AND NOT logged THEN
            IF EXISTS (SELECT 1 FROM local_call_queue WHERE batch_id = p_batch_id)
               AND NOT EXISTS (SELECT 1 FROM local_call_queue
                                WHERE batch_id = p_batch_id
                                  AND (queue_status IS NULL
                                       OR queue_status NOT IN ('failed', 'cancelled'))) THEN
                IF EXISTS (SELECT 1 FROM local_call_queue
                            WHERE batch_id = p_batch_id AND queue_status = 'failed') THEN
                    candidate := 'failed';
                ELSE
                    candidate := 'cancelled';
                END IF;
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
        -- completed, or to failed or cancelled; an unknown or NULL status ranks below
        -- pending.
        IF candidate IN ('failed', 'cancelled')
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
           completed_at = CASE WHEN new_status IN ('completed', 'failed', 'cancelled')
                               THEN coalesce(batch.completed_at, now())
                               ELSE batch.completed_at END,
           updated_at = CURRENT_TIMESTAMP
     WHERE batch_id = p_batch_id
       -- A refresh that changes nothing leaves updated_at alone.
       AND (call_batches.completed_calls IS DISTINCT FROM completed_count
            OR call_batches.failed_calls IS DISTINCT FROM failed_count
            OR call_batches.batch_status IS DISTINCT FROM new_status
            OR (new_status IN ('submitted', 'in_progress', 'completed') AND batch.submitted_at IS NULL)
            OR (new_status IN ('completed', 'failed', 'cancelled') AND batch.completed_at IS NULL));

    RETURN new_status;
END
$$;

ALTER TABLE local_call_queue DROP COLUMN phone_e164;

DROP TABLE do_not_call;
