-- How the text index's rows are stored, for the recheck (issue 13): a
-- trigram match is lossy, so PostgreSQL reads each hit's text again and
-- matches it; for a common word that is most of a search's time. On
-- 100,000 messages ("BODY meeting", 9,941 hits, bodies of 3 KB on
-- average) reading the hits took 110-134 ms with pglz-compressed,
-- mostly out-of-line text, 55 ms with LZ4, and 42-46 ms with rows of up
-- to 8 KB kept whole in the table's own pages (toast_tuple_target):
-- neither a TOAST lookup nor decompression for most messages. Longer
-- text is compressed with LZ4 (pglz on a server built without LZ4: the
-- change is skipped, not failed). Rows written before keep their form
-- (still correct, only slower).
ALTER TABLE message_text SET (toast_tuple_target = 8160);
DO $$
BEGIN
    EXECUTE 'ALTER TABLE message_text
        ALTER COLUMN header SET COMPRESSION lz4,
        ALTER COLUMN addresses SET COMPRESSION lz4,
        ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'LZ4 is not available: the text index keeps pglz';
END
$$;
