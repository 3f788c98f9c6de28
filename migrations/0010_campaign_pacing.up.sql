-- Pacing shared by every submitter replica: a campaign with max_per_minute sends its
-- numbers on a schedule of slots, one number per slot, and this row holds the first slot
-- not yet taken. A submitter takes slots (under this row's lock) right before it sends,
-- so no 60-second span holds more than max_per_minute numbers of the campaign, whichever
-- replica sent them. Only the next free slot is kept: nothing here grows with the queue.
CREATE TABLE campaign_pacing (
    campaign_id INTEGER PRIMARY KEY REFERENCES campaigns(id) ON DELETE CASCADE,
    next_slot_at TIMESTAMPTZ NOT NULL
);

-- The slot a paced row was given when it could not go out at once: it waits until then
-- (next_attempt_at), and is sent on that slot without taking another. NULL: none.
ALTER TABLE local_call_queue ADD COLUMN paced_slot_at TIMESTAMPTZ;
