-- Envelope encryption as an application sees it: two tenants, aad,
-- tampering, rotation and shredding. Ciphertexts are random, so only
-- their shape and what they decrypt to are shown.
CREATE ROLE regress_crypto_app LOGIN;
GRANT warden_app TO regress_crypto_app;
CREATE ROLE regress_crypto_admin LOGIN BYPASSRLS;  -- operators see all tenants' keys through BYPASSRLS
GRANT warden_admin TO regress_crypto_admin;
CREATE TABLE public.crypto_store (id int PRIMARY KEY, tenant text, aad text, ct bytea);
GRANT ALL ON public.crypto_store TO regress_crypto_app;

SET ROLE regress_crypto_app;

-- no tenant: a clear error, not a silent global key
SELECT warden.encrypt('x');

BEGIN;
SELECT warden.set_tenant('tenant_a');
INSERT INTO public.crypto_store VALUES
  (1, 'tenant_a', 'users.email:1', warden.encrypt('alice@example.com', 'users.email:1')),
  (2, 'tenant_a', 'users.doc:2', warden.encrypt('\x00ff10'::bytea, 'users.doc:2')),
  (3, 'tenant_a', 'users.prefs:3', warden.encrypt('{"theme": "dark"}'::jsonb, 'users.prefs:3')),
  (4, 'tenant_a', '', warden.encrypt(''));
-- envelope shape: magic e757, format 01, 19-byte header + 16-byte tag
SELECT id, substr(encode(ct, 'hex'), 1, 6) AS magic_and_version, length(ct) AS bytes FROM public.crypto_store ORDER BY id;
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 1;
SELECT warden.decrypt(ct, aad) FROM public.crypto_store WHERE id = 2;
SELECT warden.decrypt_jsonb(ct, aad) -> 'theme' AS theme FROM public.crypto_store WHERE id = 3;
SELECT warden.decrypt_text(ct) = '' AS empty_round_trip FROM public.crypto_store WHERE id = 4;
-- the same plaintext twice gives different ciphertexts (random nonce)
SELECT warden.encrypt('same') <> warden.encrypt('same') AS nonces_differ;
-- STRICT: NULL in, NULL out
SELECT warden.encrypt(NULL::text) IS NULL AS null_in_null_out;
COMMIT;

-- every way to get it wrong is the same error
BEGIN;
SELECT warden.set_tenant('tenant_a');
SAVEPOINT s;
SELECT warden.decrypt_text(ct, 'users.email:2') FROM public.crypto_store WHERE id = 1;  -- another row's aad
ROLLBACK TO SAVEPOINT s;
SELECT warden.decrypt_text(ct) FROM public.crypto_store WHERE id = 1;                   -- aad omitted
ROLLBACK TO SAVEPOINT s;
SELECT warden.decrypt_text(set_byte(ct, 25, get_byte(ct, 25) # 1), aad) FROM public.crypto_store WHERE id = 1;  -- one bit flipped
ROLLBACK TO SAVEPOINT s;
SELECT warden.decrypt_text(substr(ct, 1, length(ct) - 1), aad) FROM public.crypto_store WHERE id = 1;          -- truncated
ROLLBACK TO SAVEPOINT s;
SELECT warden.decrypt_text(set_byte(ct, 2, 9), aad) FROM public.crypto_store WHERE id = 1;                     -- unknown format version
ROLLBACK TO SAVEPOINT s;
SELECT warden.decrypt_text('\x00'::bytea);                                                                      -- not an envelope
ROLLBACK TO SAVEPOINT s;
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 2;                                    -- bytea is not text
ROLLBACK TO SAVEPOINT s;
COMMIT;

-- tenant B cannot read tenant A's ciphertext, even with the right aad
BEGIN;
SELECT warden.set_tenant('tenant_b');
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 1;
ROLLBACK;
-- tenant B's own value, to outlive the shredding of tenant A below
BEGIN;
SELECT warden.set_tenant('tenant_b');
INSERT INTO public.crypto_store VALUES (5, 'tenant_b', 'users.email:5', warden.encrypt('bob@example.com', 'users.email:5'));
COMMIT;

-- blind indexes: equal per tenant and context, different across either
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT length(warden.blind_index('alice@example.com', 'email')) AS bytes,
       warden.blind_index('alice@example.com', 'email') = warden.blind_index('alice@example.com', 'email') AS stable,
       warden.blind_index('alice@example.com', 'email') <> warden.blind_index('alice@example.com', 'login') AS per_context;
SELECT warden.blind_index('alice@example.com', 'email') AS a_index \gset
SELECT warden.set_tenant('tenant_b');
SELECT warden.blind_index('alice@example.com', 'email') <> :'a_index'::bytea AS per_tenant;
COMMIT;

-- the application cannot touch keys
SELECT * FROM warden.keys;
SELECT * FROM warden.key_catalog;
SELECT warden.rotate_data_key('tenant_a');
SELECT warden.shred_tenant('tenant_a');
SELECT warden.rotate_master_key();
RESET ROLE;

-- the plaintext cap (a superuser setting)
SET warden.max_plaintext_bytes = 16;
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT warden.encrypt(repeat('x', 17));
ROLLBACK;
RESET warden.max_plaintext_bytes;
SET ROLE regress_crypto_app;
SET warden.max_plaintext_bytes = 1000000;
RESET ROLE;

-- rotation and shredding, as an admin
SET ROLE regress_crypto_admin;
SELECT tenant, purpose, state FROM warden.key_catalog WHERE purpose <> 'audit_signing' ORDER BY tenant, purpose, state;
SELECT warden.rotate_data_key('tenant_a') > 0 AS rotated;
SELECT warden.rotate_data_key('tenant_a', 'blind_index');
SELECT warden.rotate_data_key('tenant_a', 'nonsense');
SELECT warden.rotate_data_key('bad tenant');
-- nothing to rewrap: every key is under the only root key version
SELECT warden.rotate_master_key();
SELECT tenant, purpose, state FROM warden.key_catalog WHERE purpose <> 'audit_signing' ORDER BY tenant, purpose, state;
RESET ROLE;

SET ROLE regress_crypto_app;
BEGIN;
SELECT warden.set_tenant('tenant_a');
-- old ciphertexts still decrypt; new ones use the new key
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 1;
UPDATE public.crypto_store SET ct = warden.reencrypt(ct, aad) WHERE id = 1;
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 1;
SELECT (SELECT get_byte(ct, 6) FROM public.crypto_store WHERE id = 1) = get_byte(warden.encrypt('new'), 6) AS reencrypted_under_active_key;
COMMIT;
RESET ROLE;

SET ROLE regress_crypto_admin;
SELECT warden.shred_tenant('tenant_a');
RESET ROLE;
SET ROLE regress_crypto_app;
BEGIN;
SELECT warden.set_tenant('tenant_a');
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 1;
ROLLBACK;
-- other tenants are untouched
BEGIN;
SELECT warden.set_tenant('tenant_b');
SELECT warden.decrypt_text(ct, aad) FROM public.crypto_store WHERE id = 5;
COMMIT;
RESET ROLE;
SELECT tenant, purpose, state, shredded_at IS NOT NULL AS shredded FROM warden.key_catalog WHERE purpose <> 'audit_signing' ORDER BY tenant, purpose, state;

DROP TABLE public.crypto_store;
DROP ROLE regress_crypto_app;
DROP ROLE regress_crypto_admin;
