"""Access decorators: each asks a domain rule about the signed-in person's roles."""
from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required

from app.domain import roles


def _requires(rule):
    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not rule(current_user.roles):
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorator


clinical_required = _requires(roles.can_read_patients)
admin_required = _requires(roles.can_administer)
audit_viewer_required = _requires(roles.can_view_audit)
