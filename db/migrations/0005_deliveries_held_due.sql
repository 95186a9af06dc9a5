-- Quiet hours (docs/delivery.md): a 'held' delivery is due at its window's end like a
-- scheduled one, so the index of due rows covers both states (the claim asks for both).
DROP INDEX deliveries_due_idx;
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at)
    WHERE state IN ('scheduled', 'held');
