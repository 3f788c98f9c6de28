-- Only an index: dropping it loses no data.
DROP INDEX idx_local_queue_waiting_by_batch;
