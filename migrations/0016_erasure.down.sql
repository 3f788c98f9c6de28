-- Back to E.164 numbers only. The stand-ins of erased opt-outs cannot be turned back into
-- numbers, and the older schema cannot hold them: like every down step that would discard
-- data, this one refuses unless `migrate down --force` allows it (take a backup first, as
-- the README's rollback runbook says); forced, those opt-outs are forgotten.
DO $$
BEGIN
    IF coalesce(current_setting('callbridge.allow_destructive_down', true), '') <> 'on'
       AND EXISTS (SELECT 1 FROM do_not_call WHERE phone_number LIKE 'erased:%') THEN
        RAISE EXCEPTION 'migrate down refuses to delete the opt-outs of erased numbers from do_not_call; rerun with --force to discard them'
            USING ERRCODE = 'object_in_use';
    END IF;
END
$$;
DROP FUNCTION callbridge_erased_stand_in(TEXT, BYTEA, BYTEA);
DELETE FROM do_not_call WHERE phone_number LIKE 'erased:%';
ALTER TABLE do_not_call DROP CONSTRAINT do_not_call_phone_number_check;
ALTER TABLE do_not_call ALTER COLUMN phone_number TYPE VARCHAR(16);
ALTER TABLE do_not_call ADD CONSTRAINT do_not_call_phone_number_check
    CHECK (phone_number ~ '^\+[1-9][0-9]{1,14}$');
