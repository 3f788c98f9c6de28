-- A campaign's batches, newest first, without reading other campaigns' batches: the
-- console's campaign page (its batches, its outcomes over time through each batch's
-- calls) and the campaign figures' per-campaign sums of the batches' aggregates.
CREATE INDEX idx_call_batches_campaign ON call_batches(campaign_id, batch_id)
    WHERE campaign_id IS NOT NULL;
