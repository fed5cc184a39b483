-- mailstack schema, version 3: ACME certificate cache.
--
-- golang.org/x/crypto/acme/autocert keeps its ACME account key, issued
-- certificates with their private keys, and pending HTTP-01 tokens in a
-- key-value cache. Keeping it here instead of on disk lets every mailstack
-- process serve the same certificates and answer any challenge, whichever
-- process asked for it.
CREATE TABLE acme_cache (
    key        text PRIMARY KEY,
    data       bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
