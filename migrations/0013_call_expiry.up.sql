-- A call whose terminal callback never arrives is given the call status `expired` once the
-- callback deadline has passed (and batch-status could not tell its outcome), so its batch
-- can complete. `expired` counts with failed_calls: the batch's figures then account for
-- every accepted call. A late terminal callback replaces it (the persister's fold ranks
-- `expired` below every real outcome), moving the call from failed_calls to whichever count
-- its outcome belongs to.
--
-- The list must equal callbridge_types::CallStatus::batch_count (a test in
-- callbridge-runtime checks every status against it). Both the batch routine and the
-- persister's upsert classify statuses through this function only, so this is the one
-- change the batch routine needs.
CREATE OR REPLACE FUNCTION callbridge_call_count_kind(p_call_status TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN p_call_status = 'completed' THEN 'completed'
               WHEN p_call_status IN ('failed', 'busy', 'no_answer', 'timeout', 'expired') THEN 'failed'
           END
$$;
