-- The persister rebuilds a call's call_logs row from the set of its stored events (SPEC §6:
-- the result must not depend on arrival order, and any number of replicas must agree), so
-- call_events keeps each event as the ingress validated and normalised it, beside the raw
-- payload. Re-validating the raw payload instead would depend on the ingress's configured
-- default account code and on the validation rules of the version reading it.
--
-- NOT NULL without a default: only the persister writes call_events, and it ships with
-- this column, so no row can predate it.
ALTER TABLE call_events
    ADD COLUMN event JSONB NOT NULL;
