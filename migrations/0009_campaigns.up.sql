-- Campaigns an operator steers: a named set of numbers with rules (start time, calling
-- window in the called person's local time, pacing) and a status the operator controls;
-- the links from queue rows and batches to their campaign; the queue status `cancelled`;
-- and the audit of every operator control and repair.
--
-- Rows an application inserts into local_call_queue itself have no campaign (campaign_id
-- NULL) and keep working exactly as before: always active, no window, no pacing.

CREATE TABLE campaigns (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    -- The operator's control: the submitter sends rows of an active campaign only; a
    -- paused one keeps its waiting rows, a cancelled one has none left; completed: nothing
    -- of it waits any more.
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'cancelled', 'completed')),
    -- Nothing of the campaign is sent before this instant (NULL: no start time).
    start_at TIMESTAMPTZ,
    -- The calling window, in the local time of each row's zone (the row's own time_zone,
    -- else the campaign's). The end is exclusive; a window whose end is before its start
    -- spans midnight. Both or neither: NULL means calls may go out at any hour.
    window_start TIME,
    window_end TIME,
    -- The local days on which the window opens: bit 0 Monday ... bit 6 Sunday.
    window_days SMALLINT NOT NULL DEFAULT 127 CHECK (window_days BETWEEN 1 AND 127),
    -- IANA zone name, validated by the application (chrono-tz) before it is stored.
    time_zone TEXT NOT NULL DEFAULT 'UTC',
    -- Across all submitter replicas, at most this many numbers of the campaign sent in
    -- any 60 seconds (NULL: unpaced).
    max_per_minute INTEGER CHECK (max_per_minute > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_window_both_or_neither
        CHECK ((window_start IS NULL) = (window_end IS NULL))
);

ALTER TABLE local_call_queue
    ADD COLUMN campaign_id INTEGER REFERENCES campaigns(id),
    -- The row's own IANA zone (the CSV's `timezone` column); NULL: the campaign's.
    ADD COLUMN time_zone TEXT,
    -- True when next_attempt_at was pushed out by the campaign's rules (start time,
    -- window, pause) rather than by a retry backoff: a change of rules or a resume brings
    -- exactly these rows back to due at once, and leaves retry backoffs alone.
    ADD COLUMN deferred_by_campaign BOOLEAN NOT NULL DEFAULT false;

-- A campaign's rows by status: its figures, and the operator's actions on its waiting,
-- failed or deferred rows, without reading other campaigns' history.
CREATE INDEX idx_local_queue_campaign_status
    ON local_call_queue(campaign_id, queue_status)
    WHERE campaign_id IS NOT NULL;

ALTER TABLE call_batches
    ADD COLUMN campaign_id INTEGER REFERENCES campaigns(id);

-- Every control and repair an operator makes, written in the same transaction as its
-- effect: who did what to which rows, and how many changed.
CREATE TABLE operator_actions (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- `--actor`, else the OS user (the CLI); the signed-in user (the console).
    actor TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('cli', 'console')),
    -- The console user's role (operator, viewer); NULL from the CLI.
    role TEXT,
    -- e.g. campaign.pause, campaign.set, queue.retry, queue.resolve.
    action TEXT NOT NULL,
    campaign_id INTEGER REFERENCES campaigns(id),
    -- Which rows: ids, batch, status selector.
    target JSONB NOT NULL,
    rows_affected BIGINT NOT NULL,
    detail JSONB
);

CREATE INDEX idx_operator_actions_campaign ON operator_actions(campaign_id, at);

-- Existing campaigns: every campaign_key `callbridge enqueue` wrote becomes a campaign
-- (active, no rules, as it behaved until now) named as enqueue names it: `campaign:NAME`
-- (from --campaign NAME) becomes NAME; a campaign identified by its file's content takes
-- the name its batches carry ("file.csv (sha256:…)"), else its key. Its rows and batches
-- point at it. campaign_key stays: it is what makes enqueuing the same campaign twice add
-- nothing.
CREATE TEMPORARY TABLE campaign_key_names AS
SELECT keys.campaign_key,
       CASE WHEN keys.campaign_key LIKE 'campaign:%' THEN substr(keys.campaign_key, 10)
            ELSE coalesce(nullif(btrim(b.batch_name), ''), keys.campaign_key)
       END AS name
  FROM (SELECT campaign_key, min(batch_id) AS batch_id
          FROM local_call_queue
         WHERE campaign_key IS NOT NULL
         GROUP BY campaign_key) AS keys
  LEFT JOIN call_batches b ON b.batch_id = keys.batch_id;

-- Two keys reading as one name (only a hand-written key could) share the campaign.
INSERT INTO campaigns (name)
SELECT DISTINCT name
  FROM campaign_key_names
 WHERE btrim(name) <> ''
 ORDER BY name;

UPDATE local_call_queue q
   SET campaign_id = c.id
  FROM campaign_key_names k
  JOIN campaigns c ON c.name = k.name
 WHERE q.campaign_key = k.campaign_key;

DROP TABLE campaign_key_names;

-- A batch takes the campaign of its rows, when they all belong to one.
UPDATE call_batches b
   SET campaign_id = linked.campaign_id
  FROM (SELECT batch_id, min(campaign_id) AS campaign_id
          FROM local_call_queue
         WHERE batch_id IS NOT NULL AND campaign_id IS NOT NULL
         GROUP BY batch_id
        HAVING count(DISTINCT campaign_id) = 1) AS linked
 WHERE b.batch_id = linked.batch_id;

-- The one routine that decides a batch's counts and status, as in 0007, with `cancelled`:
--
-- * a cancelled row is not waiting: a batch whose other rows were all accepted completes
--   once their calls have ended;
-- * a batch nothing of which was accepted or logged ends `cancelled` when every row of
--   it is cancelled, and `failed` when every row is failed or cancelled and one at least
--   failed;
-- * completed, failed and cancelled are final.
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
