-- The integration guide's three tables and their indexes, exactly as its SQL documents
-- them (seed/000_d4f7261114767598.txt, "Client Database Tables"; the SQL is canonical where
-- the guide's Alembic sketch differs). Every statement is IF NOT EXISTS so that a database
-- where the guide's SQL was already run is adopted as it stands instead of failing.

CREATE TABLE IF NOT EXISTS call_logs (
    id SERIAL PRIMARY KEY,
    call_id VARCHAR(255) UNIQUE NOT NULL,
    accountcode VARCHAR(100) NOT NULL,
    batch_id INTEGER,
    phone_number VARCHAR(20) NOT NULL,
    call_status VARCHAR(50) NOT NULL,
    disposition VARCHAR(50),
    duration INTEGER DEFAULT 0,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    recording_url TEXT,
    server_code VARCHAR(100),
    error_message TEXT,
    custom_data JSONB,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_call_logs_accountcode ON call_logs(accountcode);
CREATE INDEX IF NOT EXISTS idx_call_logs_batch_id ON call_logs(batch_id);
CREATE INDEX IF NOT EXISTS idx_call_logs_phone_number ON call_logs(phone_number);
CREATE INDEX IF NOT EXISTS idx_call_logs_call_status ON call_logs(call_status);
CREATE INDEX IF NOT EXISTS idx_call_logs_created_at ON call_logs(created_at);

CREATE TABLE IF NOT EXISTS call_batches (
    id SERIAL PRIMARY KEY,
    batch_id INTEGER UNIQUE NOT NULL,
    accountcode VARCHAR(100) NOT NULL,
    batch_name VARCHAR(255),
    total_calls INTEGER DEFAULT 0,
    completed_calls INTEGER DEFAULT 0,
    failed_calls INTEGER DEFAULT 0,
    batch_status VARCHAR(50) DEFAULT 'pending',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_call_batches_accountcode ON call_batches(accountcode);
CREATE INDEX IF NOT EXISTS idx_call_batches_batch_status ON call_batches(batch_status);

CREATE TABLE IF NOT EXISTS local_call_queue (
    id SERIAL PRIMARY KEY,
    phone_number VARCHAR(20) NOT NULL,
    batch_id INTEGER,
    custom_data JSONB,
    queue_status VARCHAR(50) DEFAULT 'pending',
    retry_count INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_local_queue_batch_id ON local_call_queue(batch_id);
CREATE INDEX IF NOT EXISTS idx_local_queue_status ON local_call_queue(queue_status);

-- An adopted table made by hand (or by the guide's Alembic sketch, which covers call_logs
-- only) may lack a column callbridge writes. Say which one now, rather than let a service
-- fail on it later with a bare "column does not exist".
DO $$
DECLARE
    missing TEXT;
BEGIN
    SELECT string_agg(format('%s.%s', expected.table_name, expected.column_name), ', ')
      INTO missing
      FROM (VALUES
            ('call_logs', 'id'), ('call_logs', 'call_id'), ('call_logs', 'accountcode'),
            ('call_logs', 'batch_id'), ('call_logs', 'phone_number'), ('call_logs', 'call_status'),
            ('call_logs', 'disposition'), ('call_logs', 'duration'), ('call_logs', 'start_time'),
            ('call_logs', 'end_time'), ('call_logs', 'recording_url'), ('call_logs', 'server_code'),
            ('call_logs', 'error_message'), ('call_logs', 'custom_data'),
            ('call_logs', 'created_at'), ('call_logs', 'updated_at'),
            ('call_batches', 'id'), ('call_batches', 'batch_id'), ('call_batches', 'accountcode'),
            ('call_batches', 'batch_name'), ('call_batches', 'total_calls'),
            ('call_batches', 'completed_calls'), ('call_batches', 'failed_calls'),
            ('call_batches', 'batch_status'), ('call_batches', 'created_at'),
            ('call_batches', 'updated_at'),
            ('local_call_queue', 'id'), ('local_call_queue', 'phone_number'),
            ('local_call_queue', 'batch_id'), ('local_call_queue', 'custom_data'),
            ('local_call_queue', 'queue_status'), ('local_call_queue', 'retry_count'),
            ('local_call_queue', 'created_at'), ('local_call_queue', 'updated_at')
           ) AS expected(table_name, column_name)
     WHERE NOT EXISTS (
           SELECT 1
             FROM information_schema.columns c
            WHERE c.table_schema = current_schema()
              AND c.table_name = expected.table_name
              AND c.column_name = expected.column_name);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'cannot adopt the existing call tables: column(s) % missing', missing
            USING HINT = 'Add the columns as the integration guide''s SQL defines them, then rerun migrate up.';
    END IF;
END
$$;

-- Every down migration that would destroy rows calls this first. It refuses unless the
-- operator asked for it (`callbridge migrate down --force` sets the setting on its own
-- session), so a mistaken rollback cannot silently delete call data.
CREATE OR REPLACE FUNCTION callbridge_refuse_destructive_down(p_table TEXT, p_action TEXT)
RETURNS VOID
LANGUAGE plpgsql
AS $$
DECLARE
    holds_rows BOOLEAN;
BEGIN
    IF coalesce(current_setting('callbridge.allow_destructive_down', true), '') = 'on' THEN
        RETURN;
    END IF;
    IF to_regclass(p_table) IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', p_table) INTO holds_rows;
    IF holds_rows THEN
        RAISE EXCEPTION 'migrate down refuses to % %: the table holds rows; rerun with --force to discard them', p_action, p_table
            USING ERRCODE = 'object_in_use';
    END IF;
END
$$;
