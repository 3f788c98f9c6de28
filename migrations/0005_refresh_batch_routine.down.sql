DROP FUNCTION callbridge_refresh_batch(INTEGER);
