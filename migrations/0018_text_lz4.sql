-- The text index's columns are compressed with LZ4 instead of pglz (issue
-- 13): a search for a common word rechecks each of its hits' text, and
-- most of that time was pglz decompression (on 100,000 messages, "BODY
-- meeting" with 9,941 hits: 110-134 ms with pglz, 48 ms with LZ4, both
-- compressing bodies of 3 KB on average to 1.4 and 1.9 KB). Rows written
-- before keep pglz (still correct, only slower) until they are indexed
-- again. A server built without LZ4 keeps pglz: the change is skipped,
-- not failed.
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
