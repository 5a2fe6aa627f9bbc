"""The console's device list: each device's sync health from its telemetry, risky ones first.

Devices report their own state (DESIGN.md §5, device telemetry); the server only knows what
they last said and when it last heard from them. Risks are judged against that, so a device
that has gone quiet is flagged on what it said before it went quiet.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select

from app.extensions import db
from app.models import Clinic, SyncClient, User
from app.models.records import to_json_value
from app.services.admin import Scope

# The end of a client id tells devices apart: its start is often shared ("py-", or the
# timestamp of a UUIDv7).
CLIENT_SHORT = 8
BYTE_UNITS = ("bytes", "KB", "MB", "GB", "TB")


@dataclass(frozen=True)
class RiskLimits:
    """When a device counts as at risk of losing data (SYNC_RISK_* in app/config.py)."""

    pending_hours: float
    silent_days: float
    quota_percent: float

    @classmethod
    def from_config(cls, config: Mapping) -> RiskLimits:
        return cls(pending_hours=config["SYNC_RISK_PENDING_HOURS"],
                   silent_days=config["SYNC_RISK_SILENT_DAYS"],
                   quota_percent=config["SYNC_RISK_QUOTA_PERCENT"])


def _count(value) -> int | None:
    # Telemetry is the device's word: anything that is not a plain count is treated as unknown.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _moment(value) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def duration(seconds: float) -> str:
    """'less than a minute', '40 minutes', '30 hours', '5 days': whole units, rounded down."""
    if seconds < 60:
        return "less than a minute"
    if seconds < 3600:
        return _plural(int(seconds // 60), "minute")
    if seconds < 48 * 3600:  # "30 hours" says more than "1 day" about a queue
        return _plural(int(seconds // 3600), "hour")
    return _plural(int(seconds // 86400), "day")


def byte_size(n: int) -> str:
    """'512 bytes', '3.4 MB', '120 GB' (1 KB = 1024 bytes, as browsers count storage)."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(BYTE_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return _plural(n, "byte")
    return f"{value:.1f} {BYTE_UNITS[unit]}" if value < 10 else f"{int(value)} {BYTE_UNITS[unit]}"


def storage_percent(telemetry: Mapping) -> int | None:
    """Whole percent of the quota in use, rounded down so the page never shows more than the
    flag was judged on."""
    used, quota = _count(telemetry.get("storage_used")), _count(telemetry.get("storage_quota"))
    if used is None or not quota:
        return None
    return int(used * 100 // quota)


def device_risks(telemetry: Mapping | None, last_seen_at: datetime, now: datetime,
                 limits: RiskLimits) -> list[dict]:
    """Why this device may lose data, as [{'code', 'reason'}]; empty when it looks healthy."""
    telemetry = telemetry or {}
    risks = []
    pending = _count(telemetry.get("queue_depth"))
    oldest = _moment(telemetry.get("oldest_pending_at"))
    if oldest is not None and (now - oldest).total_seconds() >= limits.pending_hours * 3600:
        risks.append({"code": "pending", "reason": (
            f"A change made on this device has waited {duration((now - oldest).total_seconds())} "
            "to be sent. Until it is sent, it exists only on this device.")})

    silent = (now - last_seen_at).total_seconds()
    if silent >= limits.silent_days * 86400:
        since = f"Not seen for {duration(silent)}"
        if pending:
            reason = (f"{since}, with {_plural(pending, 'change')} not yet sent. Until it "
                      "connects, they exist only on this device.")
        elif pending is None:
            reason = (f"{since}, and it has not reported whether changes are waiting. "
                      "Anything recorded on it since exists only on the device.")
        else:
            reason = (f"{since}. Nothing was waiting to be sent then, but anything recorded "
                      "on it since exists only on the device.")
        risks.append({"code": "silent", "reason": reason})

    if telemetry.get("storage_persisted") is False:
        risks.append({"code": "not_persisted", "reason": (
            "Its storage is not persistent: the browser may clear it when the device runs low "
            "on space, and changes not yet sent would be lost. Installing the app on the device "
            "usually fixes this.")})

    percent = storage_percent(telemetry)
    if percent is not None and percent >= limits.quota_percent:
        risks.append({"code": "near_quota", "reason": (
            f"Its storage is {percent}% full ({byte_size(telemetry['storage_used'])} of "
            f"{byte_size(telemetry['storage_quota'])}). When it is full, new changes cannot be "
            "saved on the device.")})

    quarantined = _count(telemetry.get("quarantine_count"))
    if quarantined:
        risks.append({"code": "quarantine", "reason": (
            f"{_plural(quarantined, 'change was', 'changes were')} refused by the server and "
            f"{'is' if quarantined == 1 else 'are'} kept on the device for someone to review "
            "there.")})
    return risks


def _usage(used: int | None, quota: int | None, percent: int | None) -> str | None:
    """'1.2 GB used of 2.0 GB (60%)', or as much of it as the device reported."""
    if used is None:
        return None
    text = f"{byte_size(used)} used"
    if quota is not None:
        text += f" of {byte_size(quota)}"
    return f"{text} ({percent}%)" if percent is not None else text


def device_summary(client: SyncClient, user: User, clinic_name: str | None, now: datetime,
                   limits: RiskLimits) -> dict:
    telemetry = client.telemetry or {}
    oldest = _moment(telemetry.get("oldest_pending_at"))
    used, quota = _count(telemetry.get("storage_used")), _count(telemetry.get("storage_quota"))
    persisted = telemetry.get("storage_persisted")
    percent = storage_percent(telemetry)
    risks = device_risks(client.telemetry, client.last_seen_at, now, limits)
    return {
        "client_id": client.client_id,
        "client_short": client.client_id[-CLIENT_SHORT:],
        "person": {"display_name": user.display_name, "username": user.username},
        "clinic_name": clinic_name,
        "last_seen_at": to_json_value(client.last_seen_at),
        "last_seen_ago": duration((now - client.last_seen_at).total_seconds()),
        "last_push_at": to_json_value(client.last_push_at),
        "last_pull_at": to_json_value(client.last_pull_at),
        "telemetry_at": to_json_value(client.telemetry_at),
        "queue_depth": _count(telemetry.get("queue_depth")),
        "oldest_pending_at": to_json_value(oldest),
        "oldest_pending_age": duration((now - oldest).total_seconds()) if oldest else None,
        "quarantine_count": _count(telemetry.get("quarantine_count")),
        "storage_persisted": {True: "Yes", False: "No"}.get(persisted, "Unknown"),
        "storage_used": byte_size(used) if used is not None else None,
        "storage_quota": byte_size(quota) if quota is not None else None,
        "storage_percent": percent,
        "storage_usage": _usage(used, quota, percent),
        "app_version": telemetry.get("app_version"),
        "worker_version": telemetry.get("worker_version"),
        "risks": risks,
        "at_risk": bool(risks),
    }


def devices_context(scope: Scope, clinic_id: str, now: datetime, limits: RiskLimits) -> dict:
    """The devices in the administrator's scope, at-risk ones first; `clinic_id` narrows it
    to one of their clinics (anything else shows the whole scope)."""
    query = select(Clinic).where(Clinic.organization_id == scope.organization_id)
    if not scope.org_wide:
        query = query.where(Clinic.id.in_(scope.clinic_ids))
    clinics = list(db.session.execute(query.order_by(Clinic.name)).scalars())
    names = {c.id: c.name for c in clinics}
    chosen = clinic_id if clinic_id in names else ""

    devices = select(SyncClient, User).join(User, User.id == SyncClient.user_id)
    if chosen:
        devices = devices.where(SyncClient.clinic_id == chosen)
    elif scope.org_wide:
        # A device whose user had no clinic chosen still belongs to the organization.
        devices = devices.where(or_(SyncClient.clinic_id.in_(list(names)),
                                    and_(SyncClient.clinic_id.is_(None),
                                         User.organization_id == scope.organization_id)))
    else:
        devices = devices.where(SyncClient.clinic_id.in_(list(names)))
    rows = [device_summary(c, u, names.get(c.clinic_id), now, limits)
            for c, u in db.session.execute(devices)]
    rows.sort(key=lambda d: (not d["at_risk"], (d["clinic_name"] or "").lower(),
                             d["person"]["display_name"].lower(), d["client_id"]))
    return {
        "devices": rows,
        "at_risk_count": sum(d["at_risk"] for d in rows),
        "clinic_options": [{"value": c.id, "label": c.name} for c in clinics],
        "clinic_id": chosen,
        "limits": {"pending": duration(limits.pending_hours * 3600),
                   "silent": duration(limits.silent_days * 86400),
                   "quota_percent": limits.quota_percent},
    }
