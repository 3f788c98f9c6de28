SELECT callbridge_refuse_destructive_down('call_events', 'drop table');

DROP TABLE call_events;
