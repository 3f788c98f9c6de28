-- Erasing a person's number (`callbridge erase`): where a row must stay so that counts and
-- figures do not change, the number is replaced by a stand-in, `erased:` and the first 13
-- hex digits of HMAC-SHA256 of its E.164 form under the erasure key (20 characters, the
-- width of the number columns of local_call_queue and call_logs).
--
-- An erased number that was on the do-not-call list stays on it as its stand-in, so its
-- opt-out is still honoured: the list takes stand-ins beside E.164 numbers, and the
-- submitter's claim compares the stand-in of every number it takes with the list.

ALTER TABLE do_not_call DROP CONSTRAINT do_not_call_phone_number_check;
-- Widening a varchar rewrites neither the table nor its primary key's index.
ALTER TABLE do_not_call ALTER COLUMN phone_number TYPE VARCHAR(20);
ALTER TABLE do_not_call ADD CONSTRAINT do_not_call_phone_number_check
    CHECK (phone_number ~ '^\+[1-9][0-9]{1,14}$' OR phone_number ~ '^erased:[0-9a-f]{13}$');

-- The stand-in of p_number, from HMAC's two padded key blocks (the key XORed with 0x36
-- and with 0x5c, each padded to 64 bytes): HMAC = sha256(outer || sha256(inner || m)).
-- Built from the core sha256 function, so no extension is needed, and from the blocks
-- rather than the key, so the key itself is never sent to the database. NULL when the
-- blocks are NULL (no erasure key configured).
CREATE FUNCTION callbridge_erased_stand_in(p_number TEXT, p_inner BYTEA, p_outer BYTEA)
RETURNS TEXT
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 'erased:' || left(encode(sha256(p_outer || sha256(p_inner || convert_to(p_number, 'UTF8'))), 'hex'), 13)
$$;
