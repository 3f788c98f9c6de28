-- Transactional outbox for the business-logic hooks (the guide's handle_successful_call /
-- handle_failed_call): the persister writes a row here in the same transaction that makes
-- a call terminal, and a relay publishes it to the `callbridge.outcomes` exchange and then
-- sets published_at. A crash between commit and publish therefore loses nothing; it can
-- only publish twice, which subscribers absorb by deduplicating on message_id = event_id.
CREATE TABLE call_outcome_outbox (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT UNIQUE NOT NULL,
    call_id VARCHAR(255),
    batch_id INTEGER,
    -- Terminal status; the routing key is outcome.<call_status>.
    call_status VARCHAR(50) NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

-- The relay's scan: only what is still to publish, in insertion order.
CREATE INDEX idx_call_outcome_outbox_unpublished
    ON call_outcome_outbox(id)
    WHERE published_at IS NULL;
