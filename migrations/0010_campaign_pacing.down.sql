-- Only pacing slots are lost: rows waiting for theirs are due at that time all the same
-- and take a new slot when claimed; the first send starts a new schedule.
ALTER TABLE local_call_queue DROP COLUMN paced_slot_at;
DROP TABLE campaign_pacing;
