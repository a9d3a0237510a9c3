-- Tungku schema v2: alerting. The minimal facility record, rule packs, alerts with their
-- ISA-18.2 state, the append-only hash-chained journal, the engine's checkpoint and the
-- webhook outbox.

-- The facility record, minimal: what escalation and the hot-work interlock need. The full
-- record (DOMAIN.md §5) and its API come later.
CREATE TABLE facilities (
    site_id          text PRIMARY KEY,
    company          text NOT NULL DEFAULT '',
    iui_number       text NOT NULL DEFAULT '',
    estate           text NOT NULL DEFAULT '',
    smk3_expires_on  date,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Hot-work (and other) permits. A permit covers its asset (e.g. furnace F1) and the work areas
-- listed; the interlock rules see it while opened_at <= t < closed_at, in event time.
CREATE TABLE permits (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id     text NOT NULL,
    kind        text NOT NULL DEFAULT 'hot_work',
    asset       text NOT NULL,
    areas       text[] NOT NULL DEFAULT '{}',
    opened_at   timestamptz NOT NULL,
    closed_at   timestamptz,
    issued_by   text NOT NULL,
    description text NOT NULL DEFAULT '',
    CHECK (closed_at IS NULL OR closed_at > opened_at)
);
CREATE INDEX permits_site ON permits (site_id, opened_at);

-- Open inspection findings per asset (escalate alerts on that asset while open).
CREATE TABLE findings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id     text NOT NULL,
    asset       text NOT NULL,
    opened_at   timestamptz NOT NULL,
    closed_at   timestamptz,
    agency      text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    CHECK (closed_at IS NULL OR closed_at > opened_at)
);

-- Periodic reports: late while due_at has passed and nothing was submitted by then.
CREATE TABLE periodic_reports (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id       text NOT NULL,
    period        text NOT NULL,
    due_at        timestamptz NOT NULL,
    submitted_at  timestamptz,
    UNIQUE (site_id, period)
);

-- Every pack the engine has run, by content hash.
CREATE TABLE rule_packs (
    sha256     text PRIMARY KEY,
    name       text NOT NULL,
    version    text NOT NULL,
    effective  timestamptz NOT NULL,
    body       text NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per alert instance (site, rule, subject): its current ISA-18.2 state. The journal is
-- the record; this table is the journal folded, kept for fast reads.
CREATE TABLE alerts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id           text NOT NULL,
    asset             text NOT NULL,
    rule_id           text NOT NULL,
    subject           text NOT NULL,   -- sensor id, derived signal id or gateway id
    title             text NOT NULL,
    state             text NOT NULL,
    condition_active  boolean NOT NULL,
    severity          text,
    priority          text NOT NULL,
    latched           boolean NOT NULL DEFAULT false,
    acked             boolean NOT NULL DEFAULT false,
    suppressed        boolean NOT NULL DEFAULT false,
    out_of_service    boolean NOT NULL DEFAULT false,
    shelved_until     timestamptz,
    shelve_reason     text NOT NULL DEFAULT '',
    activations       integer NOT NULL DEFAULT 0,
    value             double precision,
    limit_value       double precision,
    escalated_by      text[] NOT NULL DEFAULT '{}',
    pack_version      text NOT NULL,
    first_active_at   timestamptz,
    last_change_at    timestamptz NOT NULL,
    UNIQUE (site_id, rule_id, subject)
);
CREATE INDEX alerts_state ON alerts (site_id, state);

-- The journal: every transition, append-only. Each entry's hash covers its content and the
-- previous entry's hash (`tungku journal verify` recomputes the chain).
CREATE TABLE alert_journal (
    seq           bigint PRIMARY KEY,
    at            timestamptz NOT NULL,   -- event time (engine) or action time (operator)
    alert_id      bigint NOT NULL,
    site_id       text NOT NULL,
    asset         text NOT NULL,
    rule_id       text NOT NULL,
    subject       text NOT NULL,
    actor         text NOT NULL,
    action        text NOT NULL,
    from_state    text NOT NULL,
    to_state      text NOT NULL,
    severity      text,
    priority      text NOT NULL,
    value         double precision,
    limit_value   double precision,
    reason        text NOT NULL,
    pack_name     text NOT NULL,
    pack_version  text NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}',
    prev_hash     bytea NOT NULL,
    hash          bytea NOT NULL UNIQUE
);
CREATE INDEX alert_journal_alert ON alert_journal (alert_id, seq);
CREATE INDEX alert_journal_site_at ON alert_journal (site_id, at);

CREATE FUNCTION alert_journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alert_journal is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER alert_journal_no_update BEFORE UPDATE OR DELETE ON alert_journal
    FOR EACH ROW EXECUTE FUNCTION alert_journal_append_only();
CREATE TRIGGER alert_journal_no_truncate BEFORE TRUNCATE ON alert_journal
    FOR EACH STATEMENT EXECUTE FUNCTION alert_journal_append_only();

-- The head of the chain; appending locks this row, so entries get contiguous seq numbers and
-- each links to the one before, whichever process appends.
CREATE TABLE alert_journal_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);
INSERT INTO alert_journal_head VALUES (true, 0, '\x'::bytea);

-- The rule engine's state (windows, delays, baselines, conditions), per ingest scope (the
-- sites a process owns), saved in the same transaction as the journal entries it produced.
CREATE TABLE engine_state (
    scope        text PRIMARY KEY,
    pack_sha256  text NOT NULL,
    state        bytea NOT NULL,
    saved_at     timestamptz NOT NULL
);

-- Webhook deliveries, one per (journal entry, endpoint), written with the entry.
CREATE TABLE webhook_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_seq      bigint NOT NULL,
    endpoint         text NOT NULL,
    body             bytea NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text NOT NULL DEFAULT '',
    UNIQUE (journal_seq, endpoint)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;
