-- Digests (docs/delivery.md, "Digests"): a user whose preferences ask for an hourly,
-- daily or weekly digest gets their email deliveries in state 'digest', each with the
-- end of its period in digest_at, and one digest job per user and period: a delivery on
-- the channel 'email.digest' without a notification, 'held' until digest_at, then
-- claimed, retried and recorded by the delivery workers like any delivery.
ALTER TABLE deliveries ALTER COLUMN notification_id DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN digest_at timestamptz;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('scheduled', 'held', 'digest', 'sent', 'failed', 'skipped'));
-- Only a digest job has no notification, and it always names its period.
ALTER TABLE deliveries ADD CONSTRAINT deliveries_digest_job_check
    CHECK ((notification_id IS NOT NULL) <> (channel = 'email.digest' AND digest_at IS NOT NULL));
-- One digest job per user and period, however many instances decide deliveries.
CREATE UNIQUE INDEX deliveries_digest_job_idx ON deliveries (user_id, digest_at)
    WHERE channel = 'email.digest';
-- A digest job's build and outcome find its notifications' email deliveries.
CREATE INDEX deliveries_digest_idx ON deliveries (user_id, digest_at) WHERE state = 'digest';
