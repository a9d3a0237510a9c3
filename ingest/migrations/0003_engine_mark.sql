-- Tungku schema v3: each alert remembers the last engine event applied to it, so that a
-- restarted engine re-deriving events since its last checkpoint applies each one once.
-- (The engine's state is then checkpointed every few seconds, not with every transition.)
ALTER TABLE alerts
    ADD COLUMN engine_mark_us bigint NOT NULL DEFAULT -1,
    ADD COLUMN engine_mark_ord smallint NOT NULL DEFAULT -1;
