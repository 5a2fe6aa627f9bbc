"""Administration: who an administrator may manage, and the changes they make to users,
memberships, clinics and teams.

The scope rules are pure functions of plain values (first half of this module); the
database operations below them check those rules before they change anything and raise
NotFound (answer 404: do not reveal the record), Forbidden (403: the role lacks the action)
or Invalid (422: field errors for the form). Nothing here commits or audits: the views do.

An administrator's authority comes from their roles at their active clinic, as everywhere
else in the app: an organization administrator manages the whole organization; a clinic
administrator manages their active clinic (they switch clinic to manage another one).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.domain import roles as r
from app.domain.ids import is_uuid, new_id
from app.extensions import db
from app.models import Clinic, Membership, PasskeyCredential, Team, User, UserSession
from app.models.records import to_json_value
from app.models.types import utcnow
from app.services.accounts import find_user, hash_password

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,79}$")
CLINIC_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,19}$")
# No 0/o, 1/l/i: a temporary password is read out or copied by hand.
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # nosec B105: letters to draw from, not a password
PASSWORD_GROUPS, PASSWORD_GROUP_LEN = 3, 4  # about 59 bits


class AdminError(Exception):
    """Base of the refusals below."""


class NotFound(AdminError):
    """Not there, or not in the administrator's scope: answer 404 either way."""


class Forbidden(AdminError):
    """In scope, but the administrator's role does not allow this action: answer 403."""


class Invalid(AdminError):
    """Bad input or a refused change: {field: message} for the form (422)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# --- Scope rules (pure) -----------------------------------------------------------------


class Held(Protocol):
    """A membership as the rules see it."""

    id: str
    user_id: str
    clinic_id: str
    role: str


@dataclass(frozen=True)
class Scope:
    """What one administrator may manage."""

    actor_id: str
    organization_id: str
    org_wide: bool
    clinic_ids: frozenset[str] = field(default_factory=frozenset)  # when not org-wide


def scope_for(actor_id: str, organization_id: str, active_clinic_id: str | None,
              active_roles: Iterable[str]) -> Scope | None:
    """The administrator's scope from their roles at their active clinic; None if none."""
    active = frozenset(active_roles)
    if r.ORG_ADMIN in active:
        return Scope(actor_id, organization_id, org_wide=True)
    if r.CLINIC_ADMIN in active and active_clinic_id:
        return Scope(actor_id, organization_id, org_wide=False,
                     clinic_ids=frozenset({active_clinic_id}))
    return None


def covers_clinic(scope: Scope, clinic_organization_id: str, clinic_id: str) -> bool:
    if clinic_organization_id != scope.organization_id:
        return False
    return scope.org_wide or clinic_id in scope.clinic_ids


def sees_user(scope: Scope, user_organization_id: str, clinic_ids: Iterable[str]) -> bool:
    """Org admins see everyone in the organization; clinic admins, people of their clinic."""
    if user_organization_id != scope.organization_id:
        return False
    return scope.org_wide or bool(scope.clinic_ids & set(clinic_ids))


def sees_membership(scope: Scope, membership: Held) -> bool:
    return scope.org_wide or membership.clinic_id in scope.clinic_ids


def grantable_roles(scope: Scope) -> tuple[str, ...]:
    return tuple(role for role in r.ROLES if may_grant(scope, role))


def may_grant(scope: Scope, role: str) -> bool:
    """Only organization administrators grant or remove the organization administrator role."""
    return role in r.ROLES and (scope.org_wide or role != r.ORG_ADMIN)


def may_create_clinic(scope: Scope) -> bool:
    return scope.org_wide


def may_change_account(scope: Scope, memberships: Iterable[Held]) -> bool:
    """Disable, enable, reset sign-in: only for accounts wholly inside the scope.

    Otherwise a clinic administrator could reset the password and code app of someone who
    holds more than they do (an org admin, or a role at another clinic) and sign in as them.
    """
    if scope.org_wide:
        return True
    return all(m.clinic_id in scope.clinic_ids and m.role != r.ORG_ADMIN for m in memberships)


def self_change_problem(scope: Scope, target_user_id: str, action: str) -> str | None:
    """Refuse changes that would lock the administrator out of their own account."""
    if target_user_id != scope.actor_id:
        return None
    return {
        "disable": "You cannot disable your own account. Ask another administrator if it "
                   "must be disabled.",
        "reset_mfa": "You cannot reset your own code app here, because it would sign you out "
                     "at once. Ask another administrator to do it.",
        "password": "You cannot give yourself a temporary password here, because it would "  # nosec B105: a message
                    "sign you out before you could read it. Ask another administrator.",
        "reset_passkeys": "You cannot remove all your own passkeys here, because it would "
                          "sign you out at once. Remove them one by one under your account.",
    }.get(action)


def removal_problem(scope: Scope, membership: Held, user_memberships: Iterable[Held],
                    active_org_admin_memberships: Iterable[Held]) -> str | None:
    """Why this membership may not be removed, or None.

    `user_memberships`: all of the user's memberships; `active_org_admin_memberships`: the
    organization's org_admin memberships held by users who are not disabled.
    """
    others = [m for m in user_memberships if m.id != membership.id]
    if (membership.user_id == scope.actor_id and membership.role in r.ADMIN_ROLES
            and not any(m.role in r.ADMIN_ROLES for m in others)):
        return ("This is your last administrator role. You cannot remove it yourself, or you "
                "would lose this console. Ask another administrator if it must go.")
    if membership.role == r.ORG_ADMIN and not any(
            m.id != membership.id for m in active_org_admin_memberships):
        return ("This is the organization's last organization administrator role. Give the "
                "role to someone else first, then remove this one.")
    return None


def validate_username(value: str) -> str | None:
    if not value:
        return "Enter a username."
    if not USERNAME_RE.match(value):
        return ("Use 3 to 80 letters, digits, dots, dashes or underscores, starting with a "
                "letter or digit, and no spaces.")
    return None


def validate_name(value: str, what: str, limit: int = 200) -> str | None:
    if not value:
        return f"Enter {what}."
    if len(value) > limit:
        return f"Keep {what} to {limit} characters or fewer."
    return None


def validate_clinic_code(value: str) -> str | None:
    if not value:
        return "Enter a short code for the clinic, for example RIV."
    if not CLINIC_CODE_RE.match(value):
        return "Use 2 to 20 letters, digits or dashes, with no spaces."
    return None


def new_temporary_password() -> str:
    groups = ("".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_GROUP_LEN))
              for _ in range(PASSWORD_GROUPS))
    return "-".join(groups)


# --- Reading ----------------------------------------------------------------------------


def _clinics(scope: Scope) -> list[Clinic]:
    query = select(Clinic).where(Clinic.organization_id == scope.organization_id)
    if not scope.org_wide:
        query = query.where(Clinic.id.in_(scope.clinic_ids))
    return list(db.session.execute(query.order_by(Clinic.name)).scalars())


def _teams(clinic_ids: Iterable[str]) -> list[Team]:
    ids = list(clinic_ids)
    if not ids:
        return []
    return list(db.session.execute(select(Team).where(Team.clinic_id.in_(ids))
                                   .order_by(Team.name)).scalars())


def _memberships_of(user_ids: Iterable[str]) -> list[Membership]:
    ids = list(user_ids)
    if not ids:
        return []
    return list(db.session.execute(select(Membership).where(Membership.user_id.in_(ids))
                                   .order_by(Membership.created_at)).scalars())


def _membership_dict(m: Membership, clinic_names: dict[str, str]) -> dict:
    return {"id": m.id, "clinic_id": m.clinic_id, "clinic_name": clinic_names.get(m.clinic_id, ""),
            "role": m.role, "role_label": r.ROLE_LABELS.get(m.role, m.role),
            "team_name": m.team.name if m.team else None}


def _user_summary(user: User, memberships: list[Membership], clinic_names: dict[str, str]) -> dict:
    return {"id": user.id, "username": user.username, "display_name": user.display_name,
            "disabled": user.is_disabled, "disabled_at": to_json_value(user.disabled_at),
            "has_code_app": bool(user.totp_secret),
            "locked": bool(user.locked_until and user.locked_until > utcnow()),
            "memberships": [_membership_dict(m, clinic_names) for m in memberships]}


def list_users(scope: Scope) -> list[dict]:
    """Users in scope, each with their memberships in scope."""
    clinics = _clinics(scope)
    names = {c.id: c.name for c in clinics}
    query = select(User).where(User.organization_id == scope.organization_id)
    if not scope.org_wide:
        query = query.where(User.id.in_(select(Membership.user_id).where(
            Membership.clinic_id.in_(scope.clinic_ids))))
    users = list(db.session.execute(query.order_by(func.lower(User.username))).scalars())
    by_user: dict[str, list[Membership]] = {}
    for m in _memberships_of(u.id for u in users):
        if sees_membership(scope, m):
            by_user.setdefault(m.user_id, []).append(m)
    return [_user_summary(u, by_user.get(u.id, []), names) for u in users]


def get_user(scope: Scope, user_id: str) -> User:
    user = db.session.get(User, user_id) if is_uuid(user_id) else None
    if user is None:
        raise NotFound(user_id)
    clinic_ids = [m.clinic_id for m in _memberships_of([user.id])]
    if not sees_user(scope, user.organization_id, clinic_ids):
        raise NotFound(user_id)
    return user


def open_session_count(user: User) -> int:
    """Sessions still alive: not ended, and within the idle and absolute timeouts."""
    now = utcnow()
    config = current_app.config
    return db.session.execute(select(func.count()).select_from(UserSession).where(
        UserSession.user_id == user.id, UserSession.ended_at.is_(None),
        UserSession.last_seen_at > now - config["SESSION_IDLE_TIMEOUT"],
        UserSession.created_at > now - config["SESSION_ABSOLUTE_TIMEOUT"])).scalar_one()


def user_detail(scope: Scope, user: User) -> dict:
    clinics = _clinics(scope)
    names = {c.id: c.name for c in clinics}
    everything = _memberships_of([user.id])
    shown = [m for m in everything if sees_membership(scope, m)]
    summary = _user_summary(user, shown, names)
    for m in summary["memberships"]:
        m["removable"] = may_grant(scope, m["role"])
        m["error"] = None
    passkey_count = db.session.execute(select(func.count()).select_from(PasskeyCredential)
                                       .where(PasskeyCredential.user_id == user.id)).scalar_one()
    return {**summary, "open_sessions": open_session_count(user), "passkey_count": passkey_count,
            "is_self": user.id == scope.actor_id,
            "can_change_account": may_change_account(scope, everything)}


def form_options(scope: Scope) -> dict:
    """Clinics, roles and teams the administrator may choose from."""
    clinics = _clinics(scope)
    names = {c.id: c.name for c in clinics}
    return {
        "clinic_options": [{"value": c.id, "label": c.name} for c in clinics],
        "role_options": [{"value": role, "label": r.ROLE_LABELS[role]}
                         for role in grantable_roles(scope)],
        "team_options": [{"value": t.id, "label": f"{names[t.clinic_id]} · {t.name}"}
                         for t in _teams(names)],
    }


def list_clinics(scope: Scope) -> list[dict]:
    clinics = _clinics(scope)
    teams: dict[str, list[dict]] = {}
    for t in _teams(c.id for c in clinics):
        teams.setdefault(t.clinic_id, []).append({"id": t.id, "name": t.name})
    counts = dict(db.session.execute(
        select(Membership.clinic_id, func.count(func.distinct(Membership.user_id)))
        .where(Membership.clinic_id.in_([c.id for c in clinics]))
        .group_by(Membership.clinic_id)).all()) if clinics else {}
    return [{"id": c.id, "name": c.name, "code": c.code, "teams": teams.get(c.id, []),
             "people": counts.get(c.id, 0), "team_value": "", "team_error": None}
            for c in clinics]


# --- Changing ---------------------------------------------------------------------------


def _clinic_in_scope(scope: Scope, clinic_id: str) -> Clinic | None:
    clinic = db.session.get(Clinic, clinic_id) if is_uuid(clinic_id) else None
    if clinic is None or not covers_clinic(scope, clinic.organization_id, clinic.id):
        return None
    return clinic


def _check_grant(scope: Scope, clinic_id: str, role: str, team_id: str) -> dict[str, str]:
    """Field errors for a role at a clinic (in a team); Forbidden for org_admin by others."""
    errors: dict[str, str] = {}
    if role and role in r.ROLES and not may_grant(scope, role):
        raise Forbidden("only organization administrators grant that role")
    clinic = _clinic_in_scope(scope, clinic_id) if clinic_id else None
    if clinic is None:
        errors["clinic_id"] = "Choose one of the clinics listed."
    if role not in r.ROLES:
        errors["role"] = "Choose one of the roles listed."
    if team_id:
        team = db.session.get(Team, team_id) if is_uuid(team_id) else None
        if team is None or clinic is None or team.clinic_id != clinic.id:
            errors["team_id"] = ("That team is not at the chosen clinic. Choose one of that "
                                 "clinic's teams, or no team.")
    return errors


def create_user(scope: Scope, username: str, display_name: str, clinic_id: str, role: str,
                team_id: str = "") -> tuple[User, str]:
    """The new user (flushed) and their temporary password, to be shown once."""
    username = username.strip().lower()
    display_name = " ".join(display_name.split())
    errors = _check_grant(scope, clinic_id, role, team_id)
    if problem := validate_username(username):
        errors["username"] = problem
    elif find_user(username) is not None:
        errors["username"] = "This username is already taken. Choose another one."
    if problem := validate_name(display_name, "the person's name"):
        errors["display_name"] = problem
    if errors:
        raise Invalid(errors)
    password = new_temporary_password()
    user = User(id=new_id(), organization_id=scope.organization_id, username=username,
                display_name=display_name, password_hash=hash_password(password))
    try:
        with db.session.begin_nested():
            db.session.add(user)
            db.session.flush()
    except IntegrityError:  # someone took the name a moment ago
        raise Invalid({"username": "This username is already taken. Choose another one."})
    db.session.add(Membership(id=new_id(), user_id=user.id, clinic_id=clinic_id,
                              team_id=team_id or None, role=role))
    db.session.flush()
    return user, password


def _require_account_change(scope: Scope, user: User) -> None:
    if not may_change_account(scope, _memberships_of([user.id])):
        raise Forbidden("account has roles outside the administrator's scope")


def _refuse_self(scope: Scope, user: User, action: str) -> None:
    if problem := self_change_problem(scope, user.id, action):
        raise Invalid({action: problem})


def disable_user(scope: Scope, user: User) -> bool:
    """True if the user was active. The caller ends their sessions."""
    _require_account_change(scope, user)
    _refuse_self(scope, user, "disable")
    if user.is_disabled:
        return False
    user.disabled_at = utcnow()
    return True


def enable_user(scope: Scope, user: User) -> bool:
    _require_account_change(scope, user)
    if not user.is_disabled:
        return False
    user.disabled_at = None
    return True


def reset_mfa(scope: Scope, user: User) -> None:
    """Their next sign-in asks them to set up a code app. The caller ends their sessions."""
    _require_account_change(scope, user)
    _refuse_self(scope, user, "reset_mfa")
    user.totp_secret = None
    user.totp_last_step = None


def check_sign_in_reset(scope: Scope, user: User, action: str) -> None:
    """Raises unless the administrator may reset how this person signs in."""
    _require_account_change(scope, user)
    _refuse_self(scope, user, action)


def reset_password(scope: Scope, user: User) -> str:
    """A new temporary password (shown once); lockout cleared. The caller ends sessions."""
    _require_account_change(scope, user)
    _refuse_self(scope, user, "password")
    password = new_temporary_password()
    user.password_hash = hash_password(password)
    user.failed_sign_ins = 0
    user.locked_until = None
    return password


def add_membership(scope: Scope, user: User, clinic_id: str, role: str,
                   team_id: str = "") -> Membership:
    errors = _check_grant(scope, clinic_id, role, team_id)
    if not errors and db.session.execute(select(Membership.id).where(
            Membership.user_id == user.id, Membership.clinic_id == clinic_id,
            Membership.role == role)).first():
        errors["role"] = "They already have this role at this clinic."
    if errors:
        raise Invalid(errors)
    membership = Membership(id=new_id(), user_id=user.id, clinic_id=clinic_id,
                            team_id=team_id or None, role=role)
    try:
        with db.session.begin_nested():
            db.session.add(membership)
            db.session.flush()
    except IntegrityError:
        raise Invalid({"role": "They already have this role at this clinic."})
    return membership


def get_membership(scope: Scope, membership_id: str) -> Membership:
    membership = db.session.get(Membership, membership_id) if is_uuid(membership_id) else None
    if membership is None:
        raise NotFound(membership_id)
    clinic = db.session.get(Clinic, membership.clinic_id)
    if clinic is None or not covers_clinic(scope, clinic.organization_id, clinic.id):
        raise NotFound(membership_id)
    return membership


def remove_membership(scope: Scope, membership: Membership) -> None:
    if not may_grant(scope, membership.role):
        raise Forbidden("only organization administrators remove that role")
    user_memberships = _memberships_of([membership.user_id])
    org_admins = db.session.execute(
        select(Membership).join(User, User.id == Membership.user_id).where(
            User.organization_id == scope.organization_id, User.disabled_at.is_(None),
            Membership.role == r.ORG_ADMIN)).scalars().all()
    if problem := removal_problem(scope, membership, user_memberships, org_admins):
        raise Invalid({"membership": problem})
    db.session.delete(membership)
    db.session.flush()


def create_clinic(scope: Scope, name: str, code: str) -> Clinic:
    if not may_create_clinic(scope):
        raise Forbidden("only organization administrators create clinics")
    name = " ".join(name.split())
    code = code.strip().upper()
    errors = {}
    if problem := validate_name(name, "the clinic's name"):
        errors["name"] = problem
    if problem := validate_clinic_code(code):
        errors["code"] = problem
    elif db.session.execute(select(Clinic.id).where(func.upper(Clinic.code) == code)).first():
        errors["code"] = "Another clinic already uses this code. Choose a different one."
    if errors:
        raise Invalid(errors)
    clinic = Clinic(id=new_id(), organization_id=scope.organization_id, name=name, code=code)
    try:
        with db.session.begin_nested():
            db.session.add(clinic)
            db.session.flush()
    except IntegrityError:
        raise Invalid({"code": "Another clinic already uses this code. Choose a different one."})
    return clinic


def get_clinic(scope: Scope, clinic_id: str) -> Clinic:
    clinic = _clinic_in_scope(scope, clinic_id)
    if clinic is None:
        raise NotFound(clinic_id)
    return clinic


def create_team(scope: Scope, clinic: Clinic, name: str) -> Team:
    if not covers_clinic(scope, clinic.organization_id, clinic.id):
        raise NotFound(clinic.id)
    name = " ".join(name.split())
    if problem := validate_name(name, "the team's name"):
        raise Invalid({"name": problem})
    clash = "This clinic already has a team with that name."
    if db.session.execute(select(Team.id).where(
            Team.clinic_id == clinic.id, func.lower(Team.name) == name.lower())).first():
        raise Invalid({"name": clash})
    team = Team(id=new_id(), clinic_id=clinic.id, name=name)
    try:
        with db.session.begin_nested():
            db.session.add(team)
            db.session.flush()
    except IntegrityError:
        raise Invalid({"name": clash})
    return team
