-- What the submitter needs on local_call_queue to claim rows safely from any number of
-- replicas, retry with backoff, and never dial a person twice; and what `callbridge
-- enqueue` needs to make a campaign idempotent.
ALTER TABLE local_call_queue
    -- A pending row is due once this has passed; retries push it out with backoff.
    ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN last_error TEXT,
    -- A `submitting` row belongs to lease_owner until lease_expires_at; after that any
    -- replica may take it over (reconciling first if attempt_started_at is set).
    ADD COLUMN lease_expires_at TIMESTAMPTZ,
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN submitted_at TIMESTAMPTZ,
    -- Set just before the insert request is sent. A `submitting` row whose lease expired
    -- with this set has an unknown outcome: it must be reconciled against batch-status,
    -- never blindly resent.
    ADD COLUMN attempt_started_at TIMESTAMPTZ,
    -- The campaign a row was enqueued for (NULL for rows an application inserted itself).
    ADD COLUMN campaign_key TEXT;

-- Enqueuing the same campaign twice adds nothing: one row per number per campaign.
CREATE UNIQUE INDEX idx_local_queue_campaign_phone
    ON local_call_queue(campaign_key, phone_number)
    WHERE campaign_key IS NOT NULL;

-- The claim query's scan: due pending rows in time order, without the finished history.
CREATE INDEX idx_local_queue_due
    ON local_call_queue(next_attempt_at)
    WHERE queue_status = 'pending';

-- Finding leases that expired (a crashed or stuck submitter) without scanning history.
CREATE INDEX idx_local_queue_lease_expiry
    ON local_call_queue(lease_expires_at)
    WHERE queue_status = 'submitting';

-- Wakes idle submitters when rows arrive (they also poll, so a lost notification only
-- delays). The payload is empty: listeners re-query, so there is nothing to trust in it.
CREATE FUNCTION callbridge_notify_queue() RETURNS TRIGGER
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('callbridge_queue', '');
    RETURN NULL;
END
$$;

-- Per statement, not per row: a one-million-row COPY sends one notification, not a million.
CREATE TRIGGER local_call_queue_notify
    AFTER INSERT ON local_call_queue
    FOR EACH STATEMENT
    EXECUTE FUNCTION callbridge_notify_queue();

ALTER TABLE call_batches
    ADD COLUMN submitted_at TIMESTAMPTZ,
    ADD COLUMN completed_at TIMESTAMPTZ;
