-- The demo campaign `docker compose up` runs: 200 numbers in two batches of 100, queued
-- in local_call_queue the way `callbridge enqueue --campaign compose-demo` would, so the
-- operator controls (`callbridge campaign show|pause|resume compose-demo`) act on it.
-- Safe to run again: the campaign, the batches and the (campaign_key, phone_number) pairs
-- already there are skipped, so a second `up` dials nobody twice.
BEGIN;

INSERT INTO campaigns (name) VALUES ('compose-demo') ON CONFLICT (name) DO NOTHING;

INSERT INTO call_batches (batch_id, accountcode, batch_name, campaign_id)
SELECT batch_id, 'SIM001', batch_name, (SELECT id FROM campaigns WHERE name = 'compose-demo')
FROM (VALUES (900001, 'compose demo 1/2'), (900002, 'compose demo 2/2')) AS demo(batch_id, batch_name)
ON CONFLICT (batch_id) DO NOTHING;

INSERT INTO local_call_queue (phone_number, batch_id, custom_data, campaign_key, campaign_id)
SELECT '98765' || lpad(n::text, 5, '0'),
       900001 + (n - 1) / 100,
       jsonb_build_object('customer_id', 'CUST' || lpad(n::text, 4, '0'),
                          'campaign_id', 'COMPOSE-DEMO'),
       'compose-demo',
       (SELECT id FROM campaigns WHERE name = 'compose-demo')
FROM generate_series(1, 200) AS n
ON CONFLICT (campaign_key, phone_number) WHERE campaign_key IS NOT NULL DO NOTHING;

COMMIT;
