-- Removes the guide's tables, but only when empty unless forced: on an adopted database
-- they hold the client's own call history.
SELECT callbridge_refuse_destructive_down('local_call_queue', 'drop table');
SELECT callbridge_refuse_destructive_down('call_batches', 'drop table');
SELECT callbridge_refuse_destructive_down('call_logs', 'drop table');

DROP TABLE IF EXISTS local_call_queue;
DROP TABLE IF EXISTS call_batches;
DROP TABLE IF EXISTS call_logs;

DROP FUNCTION IF EXISTS callbridge_refuse_destructive_down(TEXT, TEXT);
