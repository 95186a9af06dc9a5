-- A create batch whose only write is one statement runs without a transaction of its
-- own (docs/api.md, "Group commit"), and claims its idempotency keys in that statement.
-- This function stops the statement, and every write of it with it, when fewer keys
-- were claimed than wanted: one was used before. The hub then makes the batch again in
-- a transaction, where the used key replays what its first request created.
CREATE FUNCTION notification_claims_checked(wanted integer, claimed bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF claimed < wanted THEN
        RAISE EXCEPTION 'an idempotency key of the batch was claimed before'
            USING ERRCODE = 'NH001';
    END IF;
    RETURN true;
END
$$;
