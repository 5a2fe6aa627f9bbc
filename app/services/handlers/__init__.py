"""One handler per mutation type; importing the modules registers them."""
from app.services.handlers import (  # noqa: F401  (imported for their registrations)
    appointments, clinical_notes, conditions, consents, medications, observations, patients,
    visits,
)
from app.services.handlers.registry import HANDLERS

__all__ = ["HANDLERS"]
