-- Text search index (issue 13): the searchable text of each message content,
-- decoded and case-folded, written by a background indexer (store.IndexText)
-- from a queue that every new content enters in its own insert's statement,
-- so delivery never waits for the indexing. Every content is either in
-- text_index_queue or in message_text, never both: search reads message_text
-- for the one and scans the message for the other.
--
-- pg_trgm (trusted since PostgreSQL 13: the database owner may create it)
-- lets LIKE and regular expressions find substrings, which IMAP SEARCH asks
-- for; a tsvector finds only words or their prefixes.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE message_text (
    message_id bigint PRIMARY KEY REFERENCES messages ON DELETE CASCADE,
    -- One line per top-level header field, each starting with a line feed:
    -- "\nname: value", the value unfolded and RFC 2047-decoded.
    header     text NOT NULL,
    -- The From, To, Cc and Bcc fields again, as FROM/TO/CC/BCC match them
    -- (normalized address lists), in the same form.
    addresses  text NOT NULL,
    -- Text parts decoded (transfer encoding, charset; HTML reduced to text)
    -- and attachment names, one part after another.
    body       text NOT NULL,
    -- The text was cut at the indexer's cap: search scans this message.
    truncated  boolean NOT NULL
);
CREATE INDEX message_text_header ON message_text USING gin (header gin_trgm_ops);
CREATE INDEX message_text_addresses ON message_text USING gin (addresses gin_trgm_ops);
CREATE INDEX message_text_body ON message_text USING gin (body gin_trgm_ops);
CREATE INDEX message_text_truncated ON message_text (message_id) WHERE truncated;

CREATE TABLE text_index_queue (
    message_id bigint PRIMARY KEY REFERENCES messages ON DELETE CASCADE
);
INSERT INTO text_index_queue (message_id) SELECT id FROM messages;

-- One statement-level trigger: a bulk load queues its contents in one insert.
CREATE FUNCTION queue_text_index() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO text_index_queue (message_id) SELECT id FROM new_messages;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_queue_text_index AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION queue_text_index();
