-- Crons (crate elves-cron), second step.
--
-- `cron/list` and the owner checks of api-v2 §4 scope crons by the app that created them (a
-- rotated key of the same app sees the same crons), so crons are listed by app.
CREATE INDEX crons_by_app ON crons (app, created_at_ms);

-- When the firer handed a recorded run to the scheduler (Unix ms), stamped after the
-- dispatch; NULL while a recorded run was not dispatched yet (or the center stopped between
-- recording and dispatching it). `dispatched_at_ms - fire_at_ms` is the run's fire lag.
ALTER TABLE cron_runs ADD COLUMN dispatched_at_ms INTEGER;
