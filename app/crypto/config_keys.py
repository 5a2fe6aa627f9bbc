"""The keys of field encryption and audit signing, from the environment.

Production refuses to start without them. Development and tests derive them from
SECRET_KEY (key id `dev`), so a laptop needs no setup; such keys protect nothing that
SECRET_KEY does not already, which is why production never derives them.
"""
from __future__ import annotations

import base64
import hashlib

from app.crypto.audit_signing import AuditKeyError, load_private_key, load_public_keys
from app.crypto.field_cipher import FieldKeyError, decode_key, parse_keys
from app.crypto.outbox_escrow import EscrowKeyError, escrow_keys

DEVELOPMENT_KID = "dev"
REQUIRED_IN_PRODUCTION = ("FIELD_ENCRYPTION_KEYS", "FIELD_BLIND_INDEX_KEY", "AUDIT_SIGNING_KEY",
                          "OUTBOX_ESCROW_KEY")


def _derived(secret: str, purpose: str) -> str:
    digest = hashlib.sha256(f"clinic-record development only: {purpose}\x00{secret}".encode())
    return base64.b64encode(digest.digest()).decode()


def key_config(env, app_env: str, secret: str, error: type[Exception]) -> dict:
    if app_env == "production":
        missing = [name for name in REQUIRED_IN_PRODUCTION if not env.get(name)]
        if missing:
            raise error(f"{', '.join(missing)} must be set in production: sensitive fields, "
                        "audit checkpoints and escrowed device queues are not protected by keys derived from SECRET_KEY.")
    config = {
        "FIELD_ENCRYPTION_KEYS": env.get("FIELD_ENCRYPTION_KEYS")
        or f"{DEVELOPMENT_KID}:{_derived(secret, 'field encryption key')}",
        "FIELD_BLIND_INDEX_KEY": env.get("FIELD_BLIND_INDEX_KEY")
        or _derived(secret, "blind index key"),
        "AUDIT_SIGNING_KEY": env.get("AUDIT_SIGNING_KEY")
        or _derived(secret, "audit signing key"),
        "AUDIT_VERIFY_KEYS": env.get("AUDIT_VERIFY_KEYS", ""),
        "AUDIT_CHECKPOINT_EVERY": int(env.get("AUDIT_CHECKPOINT_EVERY", "1000")),
        # P-256: devices seal queued mutations to its public half (DESIGN.md §6). Old keys
        # stay listed until no device can still hold an envelope sealed to them.
        "OUTBOX_ESCROW_KEY": env.get("OUTBOX_ESCROW_KEY") or _derived(secret, "outbox escrow key"),
        "OUTBOX_ESCROW_OLD_KEYS": env.get("OUTBOX_ESCROW_OLD_KEYS", ""),
    }
    try:  # a typo in a key should stop the start, not the first write of a patient
        parse_keys(config["FIELD_ENCRYPTION_KEYS"])
        decode_key(config["FIELD_BLIND_INDEX_KEY"], "FIELD_BLIND_INDEX_KEY")
        load_private_key(config["AUDIT_SIGNING_KEY"])
        load_public_keys(config["AUDIT_VERIFY_KEYS"])
        escrow_keys(config["OUTBOX_ESCROW_KEY"], config["OUTBOX_ESCROW_OLD_KEYS"])
    except (FieldKeyError, AuditKeyError, EscrowKeyError, ValueError) as exc:
        raise error(str(exc)) from exc
    return config
