-- msgroute store schema (SQLite and PostgreSQL; portable types only).
-- Times are RFC 3339 UTC strings with milliseconds (they sort as text);
-- money is a decimal string.

CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS accounts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    api_key_hash    TEXT NOT NULL UNIQUE,
    old_key_hash    TEXT,
    old_key_expires TEXT,
    webhook_secret  TEXT NOT NULL,
    callback_url    TEXT,
    regions         TEXT,            -- comma-separated region names; NULL = every region
    amqp_user       TEXT UNIQUE,
    status          TEXT NOT NULL DEFAULT 'active',   -- active | suspended | closed
    suspension      TEXT,            -- JSON: reasons and signals of the last suspension
    review_request  TEXT,            -- JSON: the account's request for review
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL,
    channel            TEXT NOT NULL,
    to_addr            TEXT,
    from_addr          TEXT,
    body               TEXT,
    subject            TEXT,
    extra              TEXT,         -- JSON: title, data, platform
    metadata           TEXT,         -- JSON
    callback_url       TEXT,
    status             TEXT NOT NULL,
    carrier            TEXT,
    region             TEXT,
    carrier_message_id TEXT,
    units              INTEGER,
    cost               TEXT,
    price              TEXT,
    currency           TEXT,
    error_code         TEXT,
    error_message      TEXT,
    attempt            INTEGER NOT NULL DEFAULT 0,
    idempotency_key    TEXT,
    expires_at         TEXT,
    send_at            TEXT,
    late_receipts      TEXT,         -- JSON list
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_account_id ON messages (account_id, id);
-- Partial where most rows have no value (no Idempotency-Key, no carrier id yet, no send_at):
-- an insert then skips them. They replace full indexes of earlier versions (dropped below);
-- `messages_created` went too: no query used it.
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency_key ON messages (account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_carrier_message ON messages (carrier, carrier_message_id)
    WHERE carrier_message_id IS NOT NULL;
DROP INDEX IF EXISTS messages_idempotency;
DROP INDEX IF EXISTS messages_carrier_id;
DROP INDEX IF EXISTS messages_created;
CREATE INDEX IF NOT EXISTS messages_status_carrier ON messages (status, carrier, updated_at);

CREATE TABLE IF NOT EXISTS status_history (
    message_id    TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    status        TEXT NOT NULL,
    at            TEXT NOT NULL,
    error_code    TEXT,
    error_message TEXT,
    PRIMARY KEY (message_id, seq)
);

CREATE TABLE IF NOT EXISTS usage_records (
    usage_id           TEXT PRIMARY KEY,
    message_id         TEXT NOT NULL UNIQUE,
    account_id         TEXT NOT NULL,
    channel            TEXT NOT NULL,
    carrier            TEXT NOT NULL,
    region             TEXT NOT NULL,
    destination        TEXT NOT NULL,   -- ISO country (sms), domain (email), platform (push)
    units              INTEGER NOT NULL,
    unit               TEXT NOT NULL,   -- segment | email | notification
    cost               TEXT NOT NULL,   -- carrier cost, total for the message
    price              TEXT NOT NULL,   -- customer price, total for the message
    currency           TEXT NOT NULL,
    carrier_message_id TEXT,
    status             TEXT NOT NULL,
    recorded_at        TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_account_time ON usage_records (account_id, recorded_at);
CREATE INDEX IF NOT EXISTS usage_carrier_id ON usage_records (carrier, carrier_message_id);
CREATE INDEX IF NOT EXISTS usage_recorded ON usage_records (carrier, recorded_at);
CREATE INDEX IF NOT EXISTS usage_recorded_at ON usage_records (recorded_at);

-- Privacy, accounts and abuse control.
CREATE INDEX IF NOT EXISTS messages_account_created ON messages (account_id, created_at);
-- only messages that still hold content: the retention sweep never rescans what it emptied
CREATE INDEX IF NOT EXISTS messages_with_content ON messages (created_at)
    WHERE body IS NOT NULL OR subject IS NOT NULL OR extra IS NOT NULL;

-- every account.* decision with its reasons and signals (accounts.suspension keeps only the last)
CREATE TABLE IF NOT EXISTS account_events (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    type       TEXT NOT NULL,       -- account.suspended | account.review_requested | account.reinstated | ...
    at         TEXT NOT NULL,
    detail     TEXT NOT NULL        -- JSON: the event as published
);
CREATE INDEX IF NOT EXISTS account_events_account ON account_events (account_id, at);

-- data-subject erasures carried out (the subject only as its pseudonym)
CREATE TABLE IF NOT EXISTS erasures (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    subject    TEXT NOT NULL,       -- the keyed pseudonym that replaced the address
    messages   INTEGER NOT NULL,    -- rows changed by this request (0 when repeated)
    at         TEXT NOT NULL
);

-- Addresses an account must not send to on a channel: opt-outs (STOP), unregistered push
-- tokens reported by a carrier, email bounces and complaints.
CREATE TABLE IF NOT EXISTS suppressions (
    account_id TEXT NOT NULL,
    channel    TEXT NOT NULL,
    address    TEXT NOT NULL,
    reason     TEXT NOT NULL,   -- opted_out | device_unregistered | bounce | complaint | api
    created_at TEXT NOT NULL,
    PRIMARY KEY (account_id, channel, address)
);

-- Written by a dispatch worker just before it hands a message to a carrier, so that a
-- redelivery after a crash knows the carrier may already have it (never send twice).
CREATE TABLE IF NOT EXISTS dispatch_log (
    message_id TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    carrier    TEXT NOT NULL,
    outcome    TEXT NOT NULL,   -- started | transient
    at         TEXT NOT NULL,
    PRIMARY KEY (message_id, attempt)
);

-- An account's sender pool: numbers, alphanumeric ids and email senders it may send from.
CREATE TABLE IF NOT EXISTS senders (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    channel    TEXT NOT NULL,
    address    TEXT NOT NULL,
    country    TEXT,            -- ISO country it is registered for (SMS), if any
    rate_limit REAL,            -- messages per second this sender may send
    created_at TEXT NOT NULL,
    UNIQUE (account_id, channel, address)
);
CREATE INDEX IF NOT EXISTS messages_send_at ON messages (status, send_at) WHERE send_at IS NOT NULL;
DROP INDEX IF EXISTS messages_scheduled;

-- Multipart SMS whose carrier gives each part its own id and receipt (Vonage): one row per
-- part, so each part's receipt maps back to its message (router/parts.py aggregates them).
CREATE TABLE IF NOT EXISTS message_parts (
    carrier            TEXT NOT NULL,
    carrier_message_id TEXT NOT NULL,   -- this part's id at the carrier (part 1's is the message's)
    message_id         TEXT NOT NULL,
    part               INTEGER NOT NULL, -- 1-based
    parts              INTEGER NOT NULL,
    status             TEXT NOT NULL,    -- sent until its final receipt: delivered | undelivered | failed
    error_code         TEXT,
    updated_at         TEXT NOT NULL,
    PRIMARY KEY (carrier, carrier_message_id)
);
CREATE INDEX IF NOT EXISTS message_parts_message ON message_parts (message_id);
