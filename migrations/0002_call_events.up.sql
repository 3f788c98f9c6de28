-- Append-only audit of every accepted callback, written by the persister in the same
-- transaction as its effect on call_logs. The unique event_id is the deduplication key: a
-- redelivered or re-sent callback (same webhook-id, or same body hash) inserts nothing.
CREATE TABLE call_events (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT UNIQUE NOT NULL,
    event_type VARCHAR(100) NOT NULL,
    call_id VARCHAR(255),
    batch_id INTEGER,
    call_status VARCHAR(50),
    end_time TIMESTAMP,
    -- The payload exactly as the centralized system sent it, before normalisation.
    payload JSONB NOT NULL,
    -- When the ingress accepted the callback; stored_at - received_at is the pipeline lag.
    received_at TIMESTAMPTZ NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- W3C trace id of the ingress request, to find the trace of a stored event.
    trace_id TEXT
);

CREATE INDEX idx_call_events_call_id ON call_events(call_id);
