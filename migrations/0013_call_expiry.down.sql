-- Back to 0007's classification, where `expired` is an unknown status that counts nowhere.
-- The expired rows stay as they are (nothing records what they held before); the batches
-- that count them are recounted so their stored figures equal a recount again. A batch
-- already completed stays completed (final).
CREATE OR REPLACE FUNCTION callbridge_call_count_kind(p_call_status TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN p_call_status = 'completed' THEN 'completed'
               WHEN p_call_status IN ('failed', 'busy', 'no_answer', 'timeout') THEN 'failed'
           END
$$;

UPDATE call_batches b
   SET failed_calls = recount.failed_calls,
       updated_at = CURRENT_TIMESTAMP
  FROM (SELECT batch_id,
               count(*) FILTER (WHERE callbridge_call_count_kind(call_status) = 'failed')::int
                   AS failed_calls
          FROM call_logs
         WHERE batch_id IN (SELECT DISTINCT batch_id FROM call_logs WHERE call_status = 'expired')
         GROUP BY batch_id) AS recount
 WHERE b.batch_id = recount.batch_id;
