CREATE INDEX idx_local_queue_phone ON local_call_queue(phone_number);
DROP INDEX idx_local_queue_e164_due;
DROP FUNCTION callbridge_lock_numbers(TEXT[]);
