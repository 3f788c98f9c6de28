-- Dropping these columns loses retry schedules, leases and campaign keys (re-enqueuing a
-- campaign would then duplicate it), so a table holding rows needs --force.
SELECT callbridge_refuse_destructive_down('local_call_queue', 'drop the lease, retry and campaign columns of');
SELECT callbridge_refuse_destructive_down('call_batches', 'drop the submitted_at/completed_at columns of');

ALTER TABLE call_batches
    DROP COLUMN completed_at,
    DROP COLUMN submitted_at;

DROP TRIGGER local_call_queue_notify ON local_call_queue;
DROP FUNCTION callbridge_notify_queue();

DROP INDEX idx_local_queue_lease_expiry;
DROP INDEX idx_local_queue_due;
DROP INDEX idx_local_queue_campaign_phone;

ALTER TABLE local_call_queue
    DROP COLUMN campaign_key,
    DROP COLUMN attempt_started_at,
    DROP COLUMN submitted_at,
    DROP COLUMN lease_owner,
    DROP COLUMN lease_expires_at,
    DROP COLUMN last_error,
    DROP COLUMN next_attempt_at;
