-- Unpublished rows are outcomes subscribers have not seen yet.
SELECT callbridge_refuse_destructive_down('call_outcome_outbox', 'drop table');

DROP TABLE call_outcome_outbox;
