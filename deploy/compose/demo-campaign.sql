-- The demo campaign `docker compose up` runs: 200 numbers in two batches of 100, queued
-- in local_call_queue the way an application (or `callbridge enqueue`) would. Safe to run
-- again: the batches and the (campaign_key, phone_number) pairs already there are skipped,
-- so a second `up` dials nobody twice.
BEGIN;

INSERT INTO call_batches (batch_id, accountcode, batch_name)
VALUES (900001, 'SIM001', 'compose demo 1/2'),
       (900002, 'SIM001', 'compose demo 2/2')
ON CONFLICT (batch_id) DO NOTHING;

INSERT INTO local_call_queue (phone_number, batch_id, custom_data, campaign_key)
SELECT '98765' || lpad(n::text, 5, '0'),
       900001 + (n - 1) / 100,
       jsonb_build_object('customer_id', 'CUST' || lpad(n::text, 4, '0'),
                          'campaign_id', 'COMPOSE-DEMO'),
       'compose-demo'
FROM generate_series(1, 200) AS n
ON CONFLICT (campaign_key, phone_number) WHERE campaign_key IS NOT NULL DO NOTHING;

COMMIT;
