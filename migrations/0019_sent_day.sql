-- mailstack schema, version 19: the calendar date SEARCH SENTBEFORE,
-- SENTON and SENTSINCE compare (RFC 9051 §6.4.4: the Date: field's date,
-- its time and zone disregarded), computed at delivery with the other sort
-- keys, so that SQL decides those keys. Before, the search read every
-- candidate's header: 1.3 s for SENTSINCE over 100,000 messages, and a
-- sent date with BODY kept the text index out, 4.5 s. sent_date (UTC)
-- cannot give it: a message written on Jan 2 at 23:00 -0500 is Jan 3 in
-- UTC. NULL when the Date: field is missing or unparsable (the search then
-- uses the INTERNALDATE's date in UTC).
ALTER TABLE message_keys ADD COLUMN sent_day date;

-- Every content stored before gets its keys again in Go at this
-- migration, in batches (store.backfillSortKeys, as for version 13), which
-- fills sent_day; the server answers once it is done (about 35 µs per
-- content here: 4 s for 100,000). A backfill of version 13 still under way
-- is covered.
DELETE FROM message_keys_backfill;
INSERT INTO message_keys_backfill SELECT 0, max(id) FROM messages HAVING max(id) IS NOT NULL;

-- Keys with a sent date but no sent day were written by an older
-- mailstack process still running after this migration (a rolling
-- upgrade); every start repairs them (store.repairSentDays), found here.
CREATE INDEX message_keys_no_sent_day ON message_keys (message_id) WHERE sent_day IS NULL AND sent_date IS NOT NULL;
