-- The submitter's claim counts and locks the still-waiting rows of each batch it takes
-- (pending, or submitting with a lease). Through idx_local_queue_batch_id that meant
-- reading every row the batch ever had, finished history included: once a 60,000-number
-- campaign was submitted, each claim that touched its batch read all 60,000 rows
-- (20-80 ms) to find the one new row. This index holds the waiting rows only, so it
-- stays as small as the work left, however long the history grows.
CREATE INDEX idx_local_queue_waiting_by_batch
    ON local_call_queue(batch_id)
    WHERE queue_status IN ('pending', 'submitting');
