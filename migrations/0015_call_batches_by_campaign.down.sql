DROP INDEX idx_call_batches_campaign;
