-- sealgate key store, schema version 1 (docs/keystore-postgres.md describes every table).
-- Applied by `sealgate keys migrate` in one transaction; the service never changes the schema.

CREATE SCHEMA sealgate;

-- Which migrations have been applied; the service refuses a database whose newest version it
-- does not know.
CREATE TABLE sealgate.schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per OpenPGP certificate: the transferable public key, binary (not armored), with
-- third-party certifications stripped. The fingerprint is upper-case hex, v4 (40) or v6 (64).
CREATE TABLE sealgate.certificates (
    fingerprint text PRIMARY KEY
        CHECK (fingerprint ~ '^([0-9A-F]{40}|[0-9A-F]{64})$'),
    certificate bytea NOT NULL CHECK (octet_length(certificate) > 0),
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now(),
    imported_by text NOT NULL
);

-- The e-mail addresses the certificate's own self-signed user IDs carry, in canonical form:
-- written with the certificate, from the certificate. sealgate checks them again when it
-- reads the certificate and never trusts a row the certificate does not back.
CREATE TABLE sealgate.certificate_addresses (
    fingerprint text NOT NULL REFERENCES sealgate.certificates ON DELETE CASCADE,
    address     text NOT NULL,
    PRIMARY KEY (fingerprint, address)
);

-- The address index: the certificates a recipient's copy is encrypted to (all usable ones).
-- An address can only name a certificate whose own user IDs carry it (the foreign key), so the
-- index cannot point a user's mail at somebody else's key.
CREATE TABLE sealgate.addresses (
    address     text NOT NULL CHECK (address = lower(address) AND address LIKE '_%@_%'),
    fingerprint text NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (address, fingerprint),
    FOREIGN KEY (fingerprint, address)
        REFERENCES sealgate.certificate_addresses (fingerprint, address) ON DELETE CASCADE
);
CREATE INDEX addresses_by_fingerprint ON sealgate.addresses (fingerprint);

-- Per-address flags. tls_required: the mailbox accepts mail only over TLS (like a line of
-- SEALGATE_SECURE_MAILBOXES).
CREATE TABLE sealgate.mailbox_flags (
    address      text PRIMARY KEY CHECK (address = lower(address) AND address LIKE '_%@_%'),
    tls_required boolean NOT NULL DEFAULT false
);

-- Every change is announced on channel sealgate_keys with the address concerned as payload,
-- so every host drops its cached answer for it at once (a certificate change names every
-- address that points at it). PostgreSQL folds equal notifications of one transaction.
CREATE FUNCTION sealgate.notify_address_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('sealgate_keys', OLD.address);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('sealgate_keys', NEW.address);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION sealgate.notify_certificate_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sealgate_keys', a.address)
        FROM sealgate.addresses a
        WHERE a.fingerprint = (CASE WHEN TG_OP = 'DELETE' THEN OLD.fingerprint
                                    ELSE NEW.fingerprint END);
    RETURN NULL;
END $$;

CREATE TRIGGER addresses_notify AFTER INSERT OR UPDATE OR DELETE ON sealgate.addresses
    FOR EACH ROW EXECUTE FUNCTION sealgate.notify_address_change();
CREATE TRIGGER mailbox_flags_notify AFTER INSERT OR UPDATE OR DELETE ON sealgate.mailbox_flags
    FOR EACH ROW EXECUTE FUNCTION sealgate.notify_address_change();
CREATE TRIGGER certificates_notify AFTER UPDATE OR DELETE ON sealgate.certificates
    FOR EACH ROW EXECUTE FUNCTION sealgate.notify_certificate_change();
