-- mailstack schema, version 2: outbound queue leases.
--
-- A worker claims a due row by setting next_attempt to now() + lease time and
-- lease to a fresh token, in a short transaction (FOR UPDATE SKIP LOCKED), and
-- then delivers without holding a transaction open across the network. If it
-- crashes, the row becomes due again when the lease runs out. Finishing an
-- attempt (delete, defer, bounce) requires the token, so a worker whose lease
-- was taken over cannot touch the row any more. Deferred rows have lease NULL.
ALTER TABLE outbound_queue
    ADD COLUMN lease           text,
    ADD COLUMN last_attempt_at timestamptz;
