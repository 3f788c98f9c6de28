-- Without the normalised events, stored calls can no longer be refolded exactly.
SELECT callbridge_refuse_destructive_down('call_events', 'drop the event column of');

ALTER TABLE call_events
    DROP COLUMN event;
