-- mailstack schema, version 5: delivery status notifications gathered per
-- delivery pass.
--
-- A recipient given up on (a permanent failure, or retries expired) is not
-- bounced in the attempt that failed it: its row stays, marked failed_at
-- with the DSN fields of its report, until no recipient of the same message
-- is in the middle of an attempt. Then a worker claims all failed rows of
-- the message (with a lease, like a delivery) and delivers one DSN listing
-- them, removing the rows in the same transaction. Pending rows are those
-- with failed_at NULL.
ALTER TABLE outbound_queue
    ADD COLUMN failed_at      timestamptz,
    ADD COLUMN dsn_status     text NOT NULL DEFAULT '',  -- RFC 3464 Status, e.g. 5.1.1 or 4.4.7
    ADD COLUMN dsn_diagnostic text NOT NULL DEFAULT '',  -- Diagnostic-Code, type smtp
    ADD COLUMN remote_mta     text NOT NULL DEFAULT '';  -- the host that answered, if any

DROP INDEX outbound_queue_next_attempt;
CREATE INDEX outbound_queue_due ON outbound_queue (next_attempt) WHERE failed_at IS NULL;
CREATE INDEX outbound_queue_failed ON outbound_queue (message_id) WHERE failed_at IS NOT NULL;
