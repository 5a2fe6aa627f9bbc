"""Signed consents: the signature image is checked to be a real, bounded PNG."""
from __future__ import annotations

import base64
import binascii

from app.domain.validation import parse_datetime
from app.models import Consent
from app.models.types import utcnow
from app.services.handlers.observations import require_visit_of
from app.services.handlers.registry import handles
from app.services.results import Rejection
from app.services.writes import WriteContext

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PREFIX = "data:image/png;base64,"
MIN_SIGNATURE_BYTES = 200  # a blank canvas is smaller than any real signature stroke


def check_signature(data_url: str) -> None:
    try:
        raw = base64.b64decode(data_url[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw.startswith(PNG_MAGIC) or len(raw) < MIN_SIGNATURE_BYTES:
        message = "The signature is missing or unreadable. Ask the signer to sign in the box again."
        raise Rejection("invalid", message, [{"field": "signature_png", "message": message}])


@handles("consent.record")
def record(ctx: WriteContext):
    data = ctx.mutation.data
    patient_id = ctx.require_patient(data["patient_id"])
    check_signature(data["signature_png"])
    consent = ctx.create(Consent, {
        "patient_id": patient_id, "visit_id": require_visit_of(ctx, data.get("visit_id"), patient_id),
        "scope": data["scope"], "signer_name": data["signer_name"].strip(),
        "signer_relation": data["signer_relation"], "signature_png": data["signature_png"],
        "signed_at": parse_datetime(data["signed_at"]) if data.get("signed_at") else utcnow()},
        patient_id=patient_id, clinic_id=ctx.actor.clinic_id)
    return ctx.applied(consent)
