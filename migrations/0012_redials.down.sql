-- Redial rows already in the queue stay (as ordinary rows of their batches); only the
-- link to the row they repeat, the policies and the aggregates are lost. Batch ids go
-- back to being one above the highest used.
ALTER TABLE call_batches
    DROP COLUMN exhausted_calls,
    DROP COLUMN answered_seconds;

DROP FUNCTION callbridge_allocate_batch_ids(INTEGER);
DROP SEQUENCE callbridge_batch_id_seq;

DROP INDEX idx_local_queue_phone;
DROP INDEX idx_local_queue_batch_phone;
DROP INDEX idx_local_queue_redial_of;

ALTER TABLE local_call_queue
    DROP COLUMN settled_status,
    DROP COLUMN redial_of,
    DROP COLUMN attempt;

ALTER TABLE campaigns
    DROP CONSTRAINT campaigns_redial_completed,
    DROP CONSTRAINT campaigns_redial_failed,
    DROP CONSTRAINT campaigns_redial_timeout,
    DROP CONSTRAINT campaigns_redial_no_answer,
    DROP CONSTRAINT campaigns_redial_busy,
    DROP COLUMN max_attempts_per_day,
    DROP COLUMN redial_completed_interval_secs,
    DROP COLUMN redial_completed_retries,
    DROP COLUMN redial_failed_interval_secs,
    DROP COLUMN redial_failed_retries,
    DROP COLUMN redial_timeout_interval_secs,
    DROP COLUMN redial_timeout_retries,
    DROP COLUMN redial_no_answer_interval_secs,
    DROP COLUMN redial_no_answer_retries,
    DROP COLUMN redial_busy_interval_secs,
    DROP COLUMN redial_busy_retries;
