-- The per-day cap on calls to one number (`campaigns.max_attempts_per_day`) is enforced
-- by the submitter's claim, across campaigns: a row whose number already had its day's
-- calls is not sent but waits for the next local day. The claim and the persister's
-- redials count a number's calls by its E.164 form under one lock per number.

-- One lock per number, held to the end of the transaction: the claim (before it counts a
-- number's calls of the day and lets a row go) and the persister (before it places a
-- redial) take it, so two of them cannot both see room for the last call of a day. The
-- keys are taken in ascending order, so two transactions locking several numbers cannot
-- each hold one the other waits for. The two-key form of the advisory lock, in a class
-- of its own (13303826, 0x0cb0012), never shares a key with the one-key call locks.
CREATE FUNCTION callbridge_lock_numbers(p_numbers TEXT[]) RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(13303826, keys.key)
       FROM (SELECT DISTINCT hashtext(number) AS key
               FROM unnest(p_numbers) AS number
              ORDER BY key) AS keys;
END
$$;

-- A number's rows by the instant they are due or went out: the cap counts a day's calls
-- (submitting, submitted, needs_review) and the persister a day's planned ones (pending
-- too), as index range reads; `callbridge dnc check` lists a number's waiting rows.
-- Rows without an E.164 form (an application's own) are neither capped nor counted.
CREATE INDEX idx_local_queue_e164_due
    ON local_call_queue(phone_e164, next_attempt_at)
    WHERE phone_e164 IS NOT NULL
      AND queue_status IN ('pending', 'submitting', 'submitted', 'needs_review');

-- The cap counted numbers by phone_number (the form sent to the API) through this index;
-- it counts their E.164 form now, and nothing else reads a number's rows by phone_number
-- alone.
DROP INDEX idx_local_queue_phone;
