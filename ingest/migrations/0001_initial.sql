-- Tungku schema v1: sensor registry, readings hypertable, rejects, gateway state.
-- Runs inside the service's schema (search_path = <schema>, public); TimescaleDB's own
-- functions live in public.

CREATE TABLE sites (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateways (
    site_id      text NOT NULL REFERENCES sites (id),
    id           text NOT NULL,
    description  text NOT NULL DEFAULT '',
    retired_at   timestamptz,
    PRIMARY KEY (site_id, id)
);

-- `key` is what readings store: an integer is 4 bytes a row where a text id would be ~20.
CREATE TABLE sensors (
    key          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id      text NOT NULL REFERENCES sites (id),
    gateway_id   text NOT NULL,
    id           text NOT NULL,
    kind         text NOT NULL,
    unit         text NOT NULL,
    min_value    double precision NOT NULL,
    max_value    double precision NOT NULL,
    period_s     double precision NOT NULL,
    asset        text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    retired_at   timestamptz,
    UNIQUE (site_id, id),
    FOREIGN KEY (site_id, gateway_id) REFERENCES gateways (site_id, id),
    CHECK (min_value < max_value),
    CHECK (period_s > 0)
);

-- Bumped on every registry load; the service polls it to pick up changes.
CREATE TABLE registry_generation (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation  bigint NOT NULL,
    changed_at  timestamptz NOT NULL
);
INSERT INTO registry_generation VALUES (true, 0, now());

CREATE TABLE readings (
    sensor_key  integer NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    quality     smallint NOT NULL DEFAULT 0,   -- 0 good, 1 uncertain, 2 bad
    PRIMARY KEY (sensor_key, ts)
);
SELECT public.create_hypertable('readings', 'ts', chunk_time_interval => interval '1 day',
                                create_default_indexes => false);

-- Whatever could not be stored as readings, kept whole for inspection. A message with some bad
-- readings appears here once, with one entry per bad reading in `errors`; its good readings
-- are in `readings`.
CREATE TABLE rejects (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at        timestamptz NOT NULL,
    topic              text NOT NULL,
    site_id            text,
    gateway_id         text,
    reason             text NOT NULL,          -- the message's reason, or its first reading's
    reasons            text[] NOT NULL,        -- every distinct reason in the message
    detail             text NOT NULL,
    errors             jsonb NOT NULL DEFAULT '[]',  -- [{index, reason, message}] per reading
    accepted_readings  integer NOT NULL DEFAULT 0,
    rejected_readings  integer NOT NULL DEFAULT 0,
    payload            bytea NOT NULL,
    payload_sha256     bytea NOT NULL,
    -- A redelivered message (same topic, same bytes) is recorded once.
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX rejects_received_at ON rejects (received_at);
CREATE INDEX rejects_reason ON rejects (reason);

CREATE TABLE gateway_state (
    site_id          text NOT NULL,
    gateway_id       text NOT NULL,
    online           boolean,
    status_ts        timestamptz,
    status_at        timestamptz,
    last_seq         bigint,
    last_message_at  timestamptz,
    PRIMARY KEY (site_id, gateway_id)
);
