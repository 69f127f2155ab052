-- Per-call throughput of one backend: pg_warden's authenticated envelope
-- encryption (key looked up by tenant, random nonce, AES-256-GCM) against
-- pgcrypto's encrypt_iv (AES-256-CBC, unauthenticated, key passed in SQL)
-- and pgp_sym_encrypt (default s2k and s2k-mode=1).
CREATE EXTENSION IF NOT EXISTS pgcrypto;
