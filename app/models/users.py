"""Users, their server-side sessions and their bearer tokens."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.org import Membership
from app.models.types import IdType, UTCDateTime, utcnow


class User(db.Model):
    __tablename__ = "user"
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # The last TOTP time step accepted: a code is usable once (replay is refused).
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        primaryjoin="User.id == Membership.user_id", foreign_keys="Membership.user_id",
        order_by="Membership.created_at", viewonly=True,
    )

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None


class UserSession(db.Model):
    """Server-side session: the cookie only names it, so the server can end it at once."""

    __tablename__ = "user_session"
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id"), index=True)
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinic.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(40))
    user_agent: Mapped[str | None] = mapped_column(String(300))

    user: Mapped[User] = relationship()


class ApiToken(db.Model):
    """Bearer token for non-browser clients of /sync/v1; only its hash is kept."""

    __tablename__ = "api_token"
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id"), index=True)
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinic.id"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class PasskeyCredential(db.Model):
    """A WebAuthn credential (passkey) a person registered; only its public key is kept."""

    __tablename__ = "passkey_credential"
    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user.id"), index=True)
    # base64url of the authenticator's credential id (at most 1023 bytes by the spec).
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The authenticator's counter goes up to 2**32 - 1: more than a signed 32-bit column holds.
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(100))
    aaguid: Mapped[str | None] = mapped_column(String(36))
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class WebAuthnChallenge(db.Model):
    """A challenge handed to a browser, kept until it is answered once or expires.

    Kept in the database rather than only in the signed cookie: a cookie can be sent again,
    a deleted row cannot be used twice, whichever app server the answer reaches.
    """

    __tablename__ = "webauthn_challenge"
    # SHA-256 of the challenge: the row proves it was issued without storing the value.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
