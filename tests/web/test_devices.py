"""The console's device list: who syncs from where, and which devices may lose data."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyotp
import pytest
from sqlalchemy import select

from app.config import build_config
from app.contexts.devices import RiskLimits, byte_size, device_risks, duration
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import AuditEvent, Clinic, Organization, SyncClient, User
from app.models.types import utcnow

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
LIMITS = RiskLimits(pending_hours=24, silent_days=3, quota_percent=80)
MB, GB = 1024 ** 2, 1024 ** 3
HEALTHY = {"queue_depth": 0, "oldest_pending_at": None, "quarantine_count": 0,
           "storage_used": GB // 10, "storage_quota": GB, "storage_persisted": True,
           "app_version": "1.4.0", "worker_version": "1.4.0"}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def risks(telemetry: dict | None = None, seen_ago: timedelta = timedelta(minutes=5),
          **changes) -> dict[str, str]:
    """{code: reason} for a device last seen `seen_ago` before NOW."""
    reported = None if telemetry is None and not changes else {**(telemetry or HEALTHY), **changes}
    return {x["code"]: x["reason"] for x in device_risks(reported, NOW - seen_ago, NOW, LIMITS)}


# --- The risk rule -----------------------------------------------------------------------


def test_a_healthy_device_has_no_risks():
    assert risks(HEALTHY) == {}


def test_a_device_that_never_reported_and_was_seen_lately_has_no_risks():
    assert risks(None) == {}


def test_an_old_pending_change_is_a_risk():
    found = risks(queue_depth=2, oldest_pending_at=_iso(NOW - timedelta(hours=30)))
    assert set(found) == {"pending"}
    assert "waited 30 hours to be sent" in found["pending"]
    assert "exists only on this device" in found["pending"]


def test_a_recent_pending_change_is_not_a_risk():
    assert risks(queue_depth=2, oldest_pending_at=_iso(NOW - timedelta(hours=23))) == {}


def test_a_silent_device_with_pending_changes_is_a_risk():
    found = risks(queue_depth=3, oldest_pending_at=_iso(NOW - timedelta(days=4, hours=2)),
                  seen_ago=timedelta(days=4))
    # The queue had waited two hours when it was last heard from; it is days old now.
    assert set(found) == {"silent", "pending"}
    assert found["silent"].startswith("Not seen for 4 days, with 3 changes not yet sent.")


def test_a_silent_device_is_a_risk_even_with_nothing_pending():
    empty = risks(HEALTHY, seen_ago=timedelta(days=3, hours=1))
    assert set(empty) == {"silent"}
    assert "Nothing was waiting to be sent then" in empty["silent"]
    unknown = risks(None, seen_ago=timedelta(days=5))
    assert set(unknown) == {"silent"}
    assert "has not reported whether changes are waiting" in unknown["silent"]


def test_a_device_seen_within_the_limit_is_not_silent():
    assert risks(HEALTHY, seen_ago=timedelta(days=2, hours=23)) == {}


def test_storage_that_is_not_persisted_is_a_risk_and_unknown_is_not():
    found = risks(storage_persisted=False)
    assert set(found) == {"not_persisted"}
    assert "may clear it" in found["not_persisted"]
    assert risks(storage_persisted=None) == {}


def test_storage_near_its_quota_is_a_risk():
    found = risks(storage_used=850 * MB, storage_quota=1000 * MB)
    assert set(found) == {"near_quota"}
    assert "85% full (850 MB of 1000 MB)" in found["near_quota"]
    # 79.95% is under the limit, though it would round to 80%.
    assert risks(storage_used=799 * MB + MB // 2, storage_quota=1000 * MB) == {}
    assert risks(storage_used=GB, storage_quota=None) == {}


def test_quarantined_changes_are_a_risk():
    one, two = risks(quarantine_count=1), risks(quarantine_count=2)
    assert "1 change was refused by the server and is kept" in one["quarantine"]
    assert "2 changes were refused by the server and are kept" in two["quarantine"]


def test_nonsense_telemetry_is_treated_as_unknown():
    assert risks(queue_depth="lots", oldest_pending_at="yesterday", quarantine_count=True,
                 storage_used=-1, storage_persisted="no") == {}


def test_every_risk_at_once():
    found = risks(queue_depth=9, oldest_pending_at=_iso(NOW - timedelta(days=6)),
                  quarantine_count=4, storage_used=GB, storage_quota=GB, storage_persisted=False,
                  seen_ago=timedelta(days=5))
    assert set(found) == {"pending", "silent", "not_persisted", "near_quota", "quarantine"}


def test_durations_and_sizes_read_plainly():
    assert duration(30) == "less than a minute"
    assert duration(60) == "1 minute"
    assert duration(47 * 3600) == "47 hours"
    assert duration(3 * 86400 + 7200) == "3 days"
    assert byte_size(1) == "1 byte"
    assert byte_size(512) == "512 bytes"
    assert byte_size(1536) == "1.5 KB"
    assert byte_size(300 * 1024 ** 2) == "300 MB"


def test_limits_come_from_the_environment(monkeypatch, tmp_path):
    defaults = RiskLimits.from_config(build_config(str(tmp_path)))
    assert defaults == RiskLimits(pending_hours=24, silent_days=3, quota_percent=80)
    monkeypatch.setenv("SYNC_RISK_PENDING_HOURS", "6")
    monkeypatch.setenv("SYNC_RISK_SILENT_DAYS", "1.5")
    monkeypatch.setenv("SYNC_RISK_QUOTA_PERCENT", "90")
    assert RiskLimits.from_config(build_config(str(tmp_path))) == RiskLimits(6, 1.5, 90)


# --- The page ----------------------------------------------------------------------------


@pytest.fixture
def make_device(app):
    """make_device(user, clinic, seen_ago=..., **telemetry) -> client id, committed."""
    def _make(user: User, clinic: Clinic | None, seen_ago: timedelta = timedelta(minutes=5),
              telemetry: dict | None = None, **changes) -> str:
        now = utcnow()
        client = SyncClient(client_id=new_id(), user_id=user.id,
                            clinic_id=clinic.id if clinic else None, last_seq=0, generation=0,
                            last_seen_at=now - seen_ago, last_push_at=now - seen_ago,
                            last_pull_at=now - seen_ago,
                            telemetry={**(telemetry or HEALTHY), **changes},
                            telemetry_at=now - seen_ago)
        db.session.add(client)
        db.session.commit()
        return client.client_id
    return _make


@pytest.fixture
def devices(world, make_device) -> dict[str, str]:
    """At clinic A a healthy device and one with an old queue; at clinic B a healthy one."""
    a, b = world.clinics["A"], world.clinics["B"]
    return {
        "a_healthy": make_device(world.user(r.NURSE, "A"), a, app_version="9.1.0-healthy-a"),
        "a_at_risk": make_device(world.user(r.CLINICIAN, "A"), a, queue_depth=7,
                                 oldest_pending_at=_iso(utcnow() - timedelta(days=2)),
                                 app_version="9.1.0-risky-a"),
        "b_healthy": make_device(world.user(r.NURSE, "B"), b, app_version="9.1.0-clinic-b"),
    }


def _events(action: str) -> list[AuditEvent]:
    events = list(db.session.execute(select(AuditEvent).where(AuditEvent.action == action)
                                     .order_by(AuditEvent.id)).scalars())
    for event in events:
        db.session.expunge(event)
    db.session.rollback()  # on SQLite an open read of the audit database blocks the next write
    return events


@pytest.mark.postgres
def test_clinic_admin_sees_their_clinics_devices_only(world, devices, client_for):
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    page = admin.get("/admin/devices")
    assert page.status_code == 200
    html = page.text
    assert devices["a_healthy"] in html and devices["a_at_risk"] in html
    assert devices["b_healthy"] not in html and "9.1.0-clinic-b" not in html
    assert "Nurse A" in html and "nurse.a" in html and "Clinic A" in html
    assert "1 of 2 devices is at risk of losing data" in html
    assert "7 changes waiting to be sent" in html and "Oldest waiting 2 days" in html
    assert "waited 2 days to be sent" in html
    assert html.index(devices["a_at_risk"]) < html.index(devices["a_healthy"])
    assert 'name="clinic_id"' not in html  # one clinic: nothing to choose between
    # Asking for clinic B by id does not widen the view.
    asked = admin.get(f"/admin/devices?clinic_id={world.clinics['B'].id}").text
    assert devices["b_healthy"] not in asked and devices["a_healthy"] in asked
    assert [e.detail for e in _events("admin.device.list")][0] == {
        "count": 2, "at_risk": 1, "clinic_id": None}


@pytest.mark.postgres
def test_org_admin_sees_every_clinic_and_filters_by_clinic(world, devices, make_device,
                                                           client_for):
    other_org = Organization(id=new_id(), name="Other Health")
    db.session.add(other_org)
    db.session.flush()
    other_clinic = Clinic(id=new_id(), organization_id=other_org.id, name="Elsewhere",
                          code="ELSE")
    stranger = User(id=new_id(), organization_id=other_org.id, username="stranger",
                    display_name="Stranger", password_hash="x", totp_secret=pyotp.random_base32())
    db.session.add_all([other_clinic, stranger])
    db.session.commit()
    elsewhere = make_device(stranger, other_clinic)
    homeless = make_device(world.user(r.LAB, "B"), None, app_version="9.1.0-no-clinic")

    admin = client_for(world.user(r.ORG_ADMIN, "A"))
    html = admin.get("/admin/devices").text
    for key in ("a_healthy", "a_at_risk", "b_healthy"):
        assert devices[key] in html
    assert homeless in html and "No clinic" in html
    assert elsewhere not in html and "Stranger" not in html
    assert "1 of 4 devices is at risk of losing data" in html
    assert f'<option value="{world.clinics["B"].id}" >Clinic B</option>' in html

    only_b = admin.get(f"/admin/devices?clinic_id={world.clinics['B'].id}").text
    assert devices["b_healthy"] in only_b
    assert devices["a_healthy"] not in only_b and homeless not in only_b
    assert f'<option value="{world.clinics["B"].id}" selected>Clinic B</option>' in only_b
    assert "No device here is at risk of losing data." in only_b

    # Another organization's clinic is no filter at all: the whole organization is shown.
    other = admin.get(f"/admin/devices?clinic_id={other_clinic.id}").text
    assert elsewhere not in other and devices["b_healthy"] in other


@pytest.mark.postgres
def test_no_devices_yet(world, client_for):
    html = client_for(world.user(r.CLINIC_ADMIN, "A")).get("/admin/devices").text
    assert "No devices have synced yet." in html
    assert 'id="at-risk-count"' not in html


def test_telemetry_never_reported_shows_as_unknown(world, make_device, client_for):
    client_id = make_device(world.user(r.NURSE, "A"), world.clinics["A"])
    row = db.session.get(SyncClient, client_id)
    row.telemetry, row.telemetry_at, row.last_push_at = None, None, None
    db.session.commit()
    html = client_for(world.user(r.CLINIC_ADMIN, "A")).get("/admin/devices").text
    assert "Changes waiting: unknown" in html and "Space used: unknown" in html
    assert "Persistent: Unknown" in html and "App unknown" in html
    assert "Reported its state <span class=\"muted\">never</span>" in html
    assert "No device here is at risk of losing data." in html


@pytest.mark.parametrize("role", [r.REGISTRATION_CLERK, r.NURSE, r.CLINICIAN, r.PHARMACIST,
                                  r.LAB, r.PRIVACY_OFFICER])
def test_other_roles_are_refused(world, devices, client_for, role):
    answer = client_for(world.user(role, "A")).get("/admin/devices")
    assert answer.status_code == 403
    assert devices["a_healthy"] not in answer.text


def test_anonymous_visitors_are_sent_to_sign_in(app):
    answer = app.test_client().get("/admin/devices")
    assert answer.status_code in (302, 303) and "/login" in answer.headers["Location"]


def test_the_console_links_to_devices_for_administrators_only(world, client_for):
    def console(role: str) -> str:
        return client_for(world.user(role, "A")).get("/admin/").text
    assert 'href="/admin/devices"' in console(r.CLINIC_ADMIN)
    assert 'href="/admin/devices"' not in console(r.PRIVACY_OFFICER)
