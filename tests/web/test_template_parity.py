"""The shared templates render the same HTML in the server's Jinja2 and the worker's Nunjucks.

Contexts are real: the pages are driven through the test client over demo data and records
written for the occasion (awkward characters included), and each render of a shared
template is captured with the plain-dict context the view passed (Flask's own additions
dropped). Each is then rendered again from its JSON round trip, in Jinja2 (which must give
the very page that was served) and in Nunjucks by one node process
(tests/js/render_templates.mjs with static/sw/templates.js), and the two must be identical.
"""
from __future__ import annotations

import difflib
import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from urllib.parse import quote

import pytest
from flask import template_rendered
from jinja2 import DictLoader, meta
from sqlalchemy import select

from app.demo.seed import ensure_demo
from app.demo.signature import signature_data_url
from app.domain import roles as r
from app.domain.ids import new_id
from app.extensions import db
from app.models import Membership, User
from app.web.shared_templates import SHARED_EXCLUDED_DIRS, shared_template_sources
from tests.conftest import PASSWORD, hashed_password

ROOT = Path(__file__).resolve().parents[2]
RENDER_SCRIPT = ROOT / "tests" / "js" / "render_templates.mjs"
# Shared templates never rendered on their own, and what renders them.
INCLUDED_ONLY = {
    "base.html": "extended by every page",
    "macros/fields.html": "imported for its macros",
}
# Markup that only the branches of templates this test means to cover produce.
EXERCISED = [
    'id="clinic-switch"', '<span class="clinic">', 'class="flash flash-success"',
    '<a href="/worklist/triage" class="current">', 'No one is waiting at', 'data-visit-id=',
    "Type a name, an identifier", "Showing the first 25", "No patient in this clinic matches",
    "may be a patient who is already registered", "None of these: register a new patient",
    "Family name is required.", 'aria-invalid="true"', "History of changes", "<del>—</del>",
    '<svg class="trend"', "<strong>Amendment</strong>", "<strong>draft</strong>", "Edit draft",
    "Mark resolved", 'class="resolved"', "Dispense", "days ·", "Start visit", "Send to",
    "No visit in progress.", "No vital signs recorded yet.", "No diagnoses.", "No notes.",
    '<img class="signature"', "Edit draft note", "Amend a signed note", "Readings in this visit",
    "Or type the right value", "Nothing is waiting for review.", "Not found", "Not allowed",
    "No role at this clinic", "The request could not be read", "Reference: <code>",
    "O&#39;Brien &amp; &#34;Sons&#34; &lt;b&gt;x&lt;/b&gt; \\ é ß", "This device",
    'class="pending-mark"', "requested: the server confirms the slot", "Changes the server refused",
    "Your session has ended.", "Value kept for now", "have not changed since the patient was registered",
]
# Text that HTML escaping, quoting and case mapping treat differently across engines.
AWKWARD = "O'Brien & \"Sons\" <b>x</b> \\ é ß"


def run_nunjucks(sources: dict[str, str], cases: list[dict]) -> list[dict]:
    """[{'html': ...} or {'error': ...}] for [{'name', 'context'}], in one node process."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the template parity tests need it (Node 20)")
    done = subprocess.run([node, str(RENDER_SCRIPT)], cwd=ROOT, capture_output=True, timeout=120,
                          input=json.dumps({"sources": sources, "cases": cases}).encode())
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(done.stdout)
    assert len(results) == len(cases)
    return results


def first_difference(expected: str, actual: str, label: str,
                     names: tuple[str, str] = ("jinja2", "nunjucks")) -> str:
    diff = difflib.unified_diff(expected.splitlines(keepends=True),
                                actual.splitlines(keepends=True), *names, n=2)
    return f"=== {label}\n" + "".join(diff)[:4000]


# Capturing what the pages render -------------------------------------------------------------

class Pages:
    """Visits pages and keeps, for each shared template rendered, its context and the HTML."""

    def __init__(self, app):
        self.app = app
        self.shared = set(shared_template_sources())
        self.cases: list[dict] = []
        self._pending: list[tuple[str, dict]] = []

    def __enter__(self):
        template_rendered.connect(self._rendered, self.app)
        return self

    def __exit__(self, *exc):
        template_rendered.disconnect(self._rendered, self.app)

    def _rendered(self, _app, template, context, **_extra):
        if template.name not in self.shared:
            return
        # What Flask adds (request, session, g, current_user, flask-wtf's csrf_token()) is not
        # the view's: it goes. A key of the view's own wins over Flask's, as in the render
        # (shell_context's csrf_token string), so it stays.
        flask_values: dict = {}
        self.app.update_template_context(flask_values)
        self._pending.append((template.name, {
            k: v for k, v in context.items()
            if k not in flask_values or v is not flask_values[k]}))

    def visit(self, client, path: str, status: int = 200, method: str = "GET", **kwargs):
        self._pending.clear()
        answer = client.open(path, method=method, **kwargs)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
        assert len(self._pending) <= 1, [name for name, _ in self._pending]
        for name, context in self._pending:
            self.cases.append({"label": f"{method} {path} → {status}", "name": name,
                               "context": context, "served": answer.get_data(as_text=True)})
        return answer

    def get(self, client, path: str, status: int = 200, **kwargs):
        return self.visit(client, path, status, **kwargs)

    def post(self, client, path: str, data: dict, status: int = 303, **kwargs):
        return self.visit(client, path, status, method="POST", data=data, **kwargs)


HX = {"HX-Request": "true"}


def _applied(result):
    assert result.status == "applied", result.error
    return result.entity_id


def _drive(pages: Pages, world, register, write, client_for) -> None:
    """Every shared page, as the people of a clinic use them."""
    clerk, nurse = world.actor(r.REGISTRATION_CLERK), world.actor(r.NURSE)
    clinician, pharmacist = world.actor(r.CLINICIAN), world.actor(r.PHARMACIST)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    iso = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731

    # A patient with everything, and awkward characters wherever text goes.
    pid = register(clerk, given_name=f"Amélie {AWKWARD}", family_name="O'Brien-Ngugi",
                   phone="0712 345 678", address=f"Plot 4 <{AWKWARD}>",
                   identifiers=[{"system": "national-id", "value": "A&B-29384756"},
                                {"system": "mrn", "value": "M'1"}])
    visit_id = _applied(write(clerk, "visit.start", "visit", {
        "patient_id": pid, "clinic_id": clerk.clinic_id, "station": "triage",
        "reason": f"Fever {AWKWARD}"}))
    for hours, (temperature, weight) in enumerate([(37.0, 70.0), (38.4, 70.5), (36.6, 71.25)]):
        at = iso(now - timedelta(hours=3 - hours))
        for code, value, unit in (("8310-5", temperature, "Cel"), ("29463-7", weight, "kg"),
                                  ("8867-4", 80 + hours, "/min")):
            _applied(write(nurse, "observation.record", "observation", {
                "patient_id": pid, "code": code, "value": value, "unit": unit,
                "effective_at": at, "visit_id": visit_id}))
    _applied(write(nurse, "observation.record", "observation", {
        "patient_id": pid, "code": "59408-5", "value": 97, "unit": "%",
        "effective_at": "2026-01-01T01:30:00+03:00"}))
    active = _applied(write(clinician, "condition.add", "condition", {
        "patient_id": pid, "text": f"Malaria {AWKWARD}", "code": "B54", "onset_date": "2026-01-02",
        "visit_id": visit_id}))
    resolved = _applied(write(clinician, "condition.add", "condition", {
        "patient_id": pid, "text": "Cough"}))
    _applied(write(clinician, "condition.resolve", "condition", {}, entity_id=resolved,
                   base_version=1))
    signed = _applied(write(clinician, "note.write", "note", {
        "patient_id": pid, "text": f"Seen.\nPlan: {AWKWARD}\n\n  indented", "visit_id": visit_id}))
    _applied(write(clinician, "note.sign", "note", {}, entity_id=signed, base_version=1))
    _applied(write(clinician, "note.amend", "note_addendum", {
        "note_id": signed, "text": f"Addendum {AWKWARD}"}))
    draft = _applied(write(clinician, "note.write", "note", {
        "patient_id": pid, "text": "Draft <i>text</i>"}))
    order = _applied(write(clinician, "medication.order", "medication_request", {
        "patient_id": pid, "medication": "Amoxicillin 500 mg", "dose": "1 capsule",
        "route": "oral", "frequency": "three times daily", "quantity": 21, "duration_days": 7}))
    _applied(write(pharmacist, "medication.dispense", "medication_dispense", {
        "request_id": order, "quantity": 7}))
    _applied(write(clinician, "medication.order", "medication_request", {
        "patient_id": pid, "medication": f"Paracetamol {AWKWARD}", "dose": "1 g",
        "route": "intravenous", "frequency": "as needed", "quantity": 4}))
    _applied(write(clerk, "appointment.book", "appointment", {
        "patient_id": pid, "starts_at": "2099-03-03T10:00:00Z", "reason": f"Review {AWKWARD}"}))
    cancelled = _applied(write(clerk, "appointment.book", "appointment", {
        "patient_id": pid, "starts_at": "2099-03-04T07:30:00+03:00"}))
    _applied(write(clerk, "appointment.cancel", "appointment", {}, entity_id=cancelled,
                   base_version=1))
    _applied(write(clerk, "consent.record", "consent", {
        "patient_id": pid, "scope": "data-sharing", "signer_name": f"Mama {AWKWARD}",
        "signer_relation": "next-of-kin", "signature_png": signature_data_url()}))
    _applied(write(nurse, "patient.update", "patient", {"phone": None, "address": "Plot 5"},
                   entity_id=pid, base={"phone": "0712 345 678"}, base_version=1))
    # Two edits of one field at once: the second waits for review.
    _applied(write(nurse, "patient.update", "patient", {"address": "Plot 6 & <7>"},
                   entity_id=pid, base={"address": "Plot 5"}, base_version=2))
    late = write(clerk, "patient.update", "patient", {"address": f"Plot {AWKWARD}"},
                 entity_id=pid, base={"address": "Plot 5"}, base_version=2)
    assert late.status == "conflict"

    # A patient with nothing but the required details, an infant, and enough namesakes to
    # fill a page of search results.
    bare = register(clerk, given_name="Baraka", family_name="Mwangi", sex="unknown")
    infant = register(clerk, given_name="Zawadi", family_name="Kariuki", sex="male",
                      birth_date=(now.date() - timedelta(days=40)).isoformat())
    _applied(write(clerk, "visit.start", "visit", {"patient_id": infant,
                                                   "clinic_id": clerk.clinic_id,
                                                   "station": "consultation"}))
    for n in range(25):
        register(clerk, given_name=f"Otieno {n}", family_name="Namesake",
                 birth_date=f"19{50 + n}-0{1 + n % 9}-1{n % 10}")

    # A nurse who works at both clinics: the clinic switcher.
    db.session.add(Membership(id=new_id(), user_id=world.user(r.NURSE).id,
                              clinic_id=world.clinics["B"].id, role=r.NURSE))
    db.session.commit()

    as_clerk = client_for(world.user(r.REGISTRATION_CLERK))
    as_nurse = client_for(world.user(r.NURSE), world.clinics["A"].id)
    as_clinician = client_for(world.user(r.CLINICIAN))
    as_pharmacist = client_for(world.user(r.PHARMACIST))

    # Worklists, whole pages and the htmx refresh.
    for station in ("registration", "triage", "consultation", "lab", "pharmacy"):
        pages.get(as_nurse, f"/worklist/{station}")
    pages.get(as_nurse, "/worklist/triage", headers=HX)
    pages.get(as_clinician, "/worklist/consultation", headers=HX)

    # Search: the empty form, results (a full page of them too), none, and htmx fragments.
    pages.get(as_clerk, "/patients")
    pages.get(as_clerk, "/patients?q=O'Brien")
    pages.get(as_clerk, "/patients?q=namesake")
    pages.get(as_clerk, "/patients?q=" + "%3Cb%3E%20%22x%22%20%26%20%C3%A9%2F%27")
    pages.get(as_clerk, "/patients?q=a%26b", headers=HX)
    pages.get(as_clerk, "/patients?q=zzz", headers=HX)
    pages.get(as_clerk, "/patients?q=", headers=HX)

    # Registration: the form, a likely duplicate (409), errors (422), then success and its flash.
    pages.get(as_clerk, f"/patients/new?given_name={quote(AWKWARD)}")
    duplicate = {"given_name": "Barakah", "family_name": "Mwangi", "sex": "unknown",
                 "birth_date": "1990-05-17", "mid": new_id()}
    pages.post(as_clerk, "/patients/new", duplicate, status=409)
    pages.post(as_clerk, "/patients/new", {"given_name": AWKWARD, "family_name": "", "sex": "male",
                                          "birth_date": "2999-01-01", "identifier_system": "mrn",
                                          "identifier_value": AWKWARD}, status=422)
    registered = pages.post(as_clerk, "/patients/new", {**duplicate, "confirm_new": "yes"})
    pages.get(as_clerk, registered.headers["Location"])

    # Charts, as people who may do different things there.
    for client in (as_clerk, as_nurse, as_clinician, as_pharmacist):
        pages.get(client, f"/patients/{pid}")
    pages.get(as_clinician, f"/patients/{bare}")
    pages.get(as_clerk, f"/patients/{bare}")
    pages.get(as_pharmacist, f"/patients/{bare}")
    pages.get(as_pharmacist, f"/patients/{infant}")
    # An open chart fetching itself again after another device changed the clinic's records.
    pages.get(as_clinician, f"/patients/{pid}", headers=HX)

    # Demographics: the form, an error, and a save with its flash on the chart.
    pages.get(as_clerk, f"/patients/{pid}/edit")
    pages.get(as_clerk, f"/patients/{bare}/edit")
    form = {"given_name": "Baraka", "family_name": "Mwangi", "sex": "unknown",
            "birth_date": "1990-05-17", "base_version": "1", "base_given_name": "Baraka",
            "base_family_name": "Mwangi", "base_sex": "unknown", "base_birth_date": "1990-05-17"}
    pages.post(as_clerk, f"/patients/{bare}/edit", {**form, "birth_date": "17/05/1990"}, status=422)
    pages.post(as_clerk, f"/patients/{bare}/edit", {**form, "phone": "0700 100 200"})
    pages.get(as_clerk, f"/patients/{bare}")
    pages.get(as_clerk, f"/patients/{bare}/history")
    pages.get(as_clerk, f"/patients/{infant}/history")

    # The clinical forms, empty and sent back with errors.
    for path in ("vitals", "conditions", "notes", "medications", "appointments", "consents"):
        pages.get(as_clinician, f"/patients/{pid}/{path}")
    pages.post(as_nurse, f"/patients/{pid}/vitals", {"temperature": "73", "heart_rate": "70.0",
                                                    "weight": "abc"}, status=422)
    pages.post(as_nurse, f"/patients/{pid}/vitals", {}, status=422)
    pages.post(as_clinician, f"/patients/{pid}/conditions", {"code": AWKWARD,
                                                            "onset_date": "2026-02-30"},
               status=422)
    pages.post(as_clinician, f"/patients/{pid}/notes", {"text": "", "sign": "yes"}, status=422)
    pages.post(as_clinician, f"/patients/{pid}/medications", {
        "medication": AWKWARD, "route": "by mouth", "quantity": "0", "duration_days": "2"},
        status=422)
    pages.post(as_clerk, f"/patients/{pid}/appointments", {"starts_at": "2020-01-01T10:00",
                                                          "reason": AWKWARD}, status=422)
    pages.post(as_clerk, f"/patients/{pid}/consents", {"scope": "research",
                                                      "signer_name": AWKWARD}, status=422)
    pages.get(as_clinician, f"/notes/{draft}/edit")
    pages.post(as_clinician, f"/notes/{draft}/edit", {"text": "", "base_version": "1",
                                                     "base_text": "Draft <i>text</i>"}, status=422)
    pages.get(as_clinician, f"/notes/{signed}/amend")
    pages.post(as_clinician, f"/notes/{signed}/amend", {"text": ""}, status=422)
    pages.post(as_clinician, f"/conditions/{active}/resolve", {"base_version": "1"})
    pages.get(as_clinician, f"/patients/{pid}")

    # Visits.
    pages.get(as_nurse, f"/visits/{visit_id}")
    pages.get(as_pharmacist, f"/visits/{visit_id}")
    pages.post(as_nurse, f"/visits/{visit_id}/move", {"station": "consultation",
                                                     "base_version": "1"})
    pages.get(as_nurse, f"/visits/{visit_id}")

    # The review list, with a conflict and (at the other clinic) without.
    pages.get(as_clinician, "/conflicts")
    pages.get(client_for(world.user(r.CLINICIAN, "B")), "/conflicts")

    # Error pages: not found, not allowed, wrong method, bad request; and no clinic role.
    # (The chart's own 404 offers a clinician emergency access: a server-only page.)
    pages.get(as_clinician, f"/patients/{new_id()}/history", status=404)
    pages.get(client_for(world.user(r.PRIVACY_OFFICER)), "/patients", status=403)
    pages.get(as_clinician, f"/patients/{pid}/identifiers", status=405)
    conflict_page = pages.get(as_clinician, "/conflicts").text
    conflict_id = conflict_page.split('id="conflict-', 1)[1].split('"', 1)[0]
    pages.post(as_clinician, f"/conflicts/{conflict_id}/resolve", {"choice": "neither"},
               status=400)
    roleless = User(id=new_id(), organization_id=world.org.id, username="nobody.a",
                    display_name=f"Nobody {AWKWARD}", password_hash=hashed_password(PASSWORD),
                    totp_secret="JBSWY3DPEHPK3PXP")
    db.session.add(roleless)
    db.session.commit()
    pages.get(client_for(roleless), "/", status=403)

    # This device's page: on the server, only the note that the installed app shows it.
    pages.get(as_nurse, "/device")

    # The demo clinics' worklists and charts: many patients, visits and readings.
    ensure_demo(12)
    demo_client = client_for(db.session.execute(
        select(User).where(User.username == "nurse.riv")).scalar_one())
    for station in ("registration", "triage", "consultation", "lab", "pharmacy"):
        pages.get(demo_client, f"/worklist/{station}")
    results = pages.get(demo_client, "/patients?q=a").text
    for chunk in results.split('<li><a href="/patients/')[1:5]:
        pages.get(demo_client, "/patients/" + chunk.split('"', 1)[0])


def _worker_cases(app, cases: list[dict]) -> list[dict]:
    """Contexts only the service worker builds: records pending on the device, and the page
    about the device itself. Shaped as the worker's twins shape them (static/sw/contexts.js)."""
    chart = next(c for c in cases if c["name"] == "patients/chart.html"
                 and c["context"]["vitals"] and c["context"]["notes"] and c["context"]["visits"])
    pending = json.loads(json.dumps(chart["context"]))
    for record in (pending["patient"], pending["vitals"][0], pending["notes"][0], pending["visits"][0]):
        record["pending"] = True
    pending["appointments"].append({**(pending["appointments"] or [{}])[0], "id": new_id(),
                                    "patient_id": pending["patient"]["id"], "reason": AWKWARD,
                                    "starts_at": "2026-12-01T09:30:00Z", "status": "requested",
                                    "pending": True, "version": 1})
    base = {k: v for k, v in chart["context"].items() if k in ("csrf_token", "request_id", "user", "nav", "messages")}
    device = {**base, "device": {
        "state": "attention", "needs_sign_in": True, "last_error": f"No connection {AWKWARD}",
        "last_synced_at": "2026-11-21T10:04:00.123Z", "version": "abc123", "client_id": new_id(),
        "storage": "1.2 MB used of 2048.0 MB (0%)", "persisted": "no",
        "conflicts": [{"mid": new_id(), "label": "Update demographics", "type": "patient.update",
                       "entity": "patient", "entity_id": new_id(), "at": "2026-11-21T10:07:00.000Z",
                       "fields": [{"field": "phone", "yours": AWKWARD, "kept": "0700 000 000"}]}],
        "pending": [{"mid": new_id(), "label": "Record an observation", "seq": None,
                     "created_at": "2026-11-21T10:05:00.000Z"}],
        "quarantine": [{"mid": new_id(), "label": "Book an appointment", "type": "appointment.book",
                        "created_at": "2026-11-21T10:05:00.000Z", "quarantined_at": "2026-11-21T10:06:00.000Z",
                        "reason": "The appointment time is in the past.", "code": "invalid",
                        "request_id": str(new_id()), "conflict": None,
                        "fields": [{"name": "starts_at", "value": "2020-01-01T09:00:00Z",
                                    "problem": "The appointment time is in the past."},
                                   {"name": "reason", "value": AWKWARD, "problem": None}]}],
    }}
    unlock = {**base, "title": "Unlock this device", "unlock": {
        "next": "/patients?q=a b&x=1", "name": AWKWARD, "setup": False,
        "problem": "That password does not unlock this device. 4 attempts are left."}}
    out = []
    for label, name, context in (("worker: chart with pending records", "patients/chart.html", pending),
                                 ("worker: this device", "device/status.html", device),
                                 ("worker: unlock", "device/unlock.html", unlock),
                                 ("worker: set up the lock", "device/unlock.html",
                                  {**unlock, "unlock": {**unlock["unlock"], "setup": True}})):
        served = app.jinja_env.get_template(name).render(context)
        out.append({"label": label, "name": name, "context": context, "served": served})
    return out


@pytest.fixture
def cases(app, world, register, write, client_for, monkeypatch) -> list[dict]:
    # The demo's people get the one password hash the tests compute, not one scrypt each.
    monkeypatch.setattr("app.demo.seed.hash_password", lambda _password: hashed_password(PASSWORD))
    with Pages(app) as pages:
        _drive(pages, world, register, write, client_for)
    return pages.cases + _worker_cases(app, pages.cases)


# The tests -----------------------------------------------------------------------------------

def test_shared_templates_are_every_template_but_admin_and_auth_and_bring_what_they_use(app):
    sources = shared_template_sources()
    on_disk = {p.relative_to(ROOT / "templates").as_posix()
               for p in (ROOT / "templates").rglob("*.html")}
    assert set(sources) == {n for n in on_disk if not n.startswith(SHARED_EXCLUDED_DIRS)}
    assert {"base.html", "patients/chart.html", "macros/fields.html"} <= set(sources)
    for name, source in sources.items():
        for used in meta.find_referenced_templates(app.jinja_env.parse(source)):
            assert used is not None, f"{name}: extends/include/import a name that is not literal"
            assert used in sources, f"{name} uses {used}, which the worker would not have"
    assert set(INCLUDED_ONLY) <= set(sources), "INCLUDED_ONLY names a template that is gone"


def test_every_shared_page_renders_the_same_in_jinja2_and_nunjucks(app, cases):
    sources = shared_template_sources()
    problems = []
    for case in cases:
        # Contexts are plain JSON: that is all the worker will have.
        try:
            text = json.dumps(case["context"], allow_nan=False)
        except (TypeError, ValueError) as error:
            problems.append(f"{case['label']} ({case['name']}): context is not JSON: {error}")
            continue
        if json.loads(text) != case["context"]:  # a tuple, a key that is not a string ...
            problems.append(f"{case['label']} ({case['name']}): context changes in a JSON "
                            "round trip")
        case["context"] = json.loads(text)
    assert not problems, "\n".join(problems)

    for case in cases:
        case["jinja"] = app.jinja_env.get_template(case["name"]).render(case["context"])
        if case["jinja"] != case["served"]:
            problems.append("The page served differs from a render of its captured context "
                            "(does the template use something outside the context?)\n"
                            + first_difference(case["served"], case["jinja"], case["label"],
                                               ("served", "jinja2 from the captured context")))

    results = run_nunjucks(sources, [{"name": c["name"], "context": c["context"]} for c in cases])
    failed_templates = set()
    for case, result in zip(cases, results):
        if case["name"] in failed_templates:
            continue
        if "error" in result:
            problems.append(f"=== {case['label']} ({case['name']}): Nunjucks failed:\n"
                            f"{result['error'][:2000]}")
        elif result["html"] != case["jinja"]:
            problems.append(first_difference(case["jinja"], result["html"],
                                             f"{case['label']} ({case['name']})"))
        else:
            continue
        failed_templates.add(case["name"])
    assert not problems, f"{len(problems)} differences:\n" + "\n\n".join(problems)

    # The pages hold what they are meant to exercise (so a change to a view or to the demo
    # cannot quietly leave a branch of a template without a case).
    shown = "\n".join(c["served"] for c in cases)
    for sign in EXERCISED:
        assert sign in shown, f"no page captured here shows {sign!r}"

    covered = {c["name"] for c in cases}
    missing = set(sources) - set(INCLUDED_ONLY) - covered
    assert not missing, (f"No page in this test renders {sorted(missing)}: add one to _drive "
                         "(or, if it is only ever included, to INCLUDED_ONLY)")
    rendered_whole = covered & set(INCLUDED_ONLY)
    assert not rendered_whole, f"{sorted(rendered_whole)} are rendered on their own after all"


# The environments themselves, on more inputs than pages hold --------------------------------

def _unicode_sample() -> list[str]:
    """Letters of the scripts whose case rules differ most, each first and not first."""
    blocks = [(0xC0, 0x250), (0x370, 0x400), (0x400, 0x530), (0x531, 0x590), (0x10A0, 0x1100),
              (0x1E00, 0x2000), (0xFB00, 0xFB18)]
    # Less U+019B, which Unicode 16 gave an upper case: engines on different Unicode
    # versions differ on such letters, and nothing here can help that.
    chars = [chr(c) for start, end in blocks for c in range(start, end) if c != 0x19B]
    return [c + "Ab" + c for c in chars] + [
        "ǆemal", "ßa", "İstanbul", "ΟΔΟΣ ΣΑΣ", "éCOLE", "", "a", "1st", " leading", "ǅ", "ᾳ", "ﬁle"]


CONSTRUCTS = {
    "escape.html": '{{ v }}|<a title="{{ v }}" data-x=\'{{ v }}\'>{{ v | e }}</a>',
    "capitalize.html": "{{ v | capitalize }}",
    "urlencode.html": '<a href="/x?q={{ v | urlencode }}">',
    "strings.html": '{{ v | replace("-", " ") | capitalize }}|{{ l | join(", ") }}|'
                    "{{ l | length }}|{{ l | length - 1 }}|{{ 'yes' if l | length > 1 else 'no' }}|"
                    "{{ 'many' if l | length > 1 }}",
    "filters.html": "{{ v | date }}|{{ v | datetime }}|{{ v | time }}|{{ v | age }}|"
                    "{{ v | number }}",
    "macros.html": '{% import "fields.html" as f %}{{ f.field("n", v) }}{{ f.field("m", v, '
                   'kind="date", required=true) }}{{ f.twice(v) }}',
    "fields.html": '{% macro field(name, value, kind="text", required=false) %}'
                   '<input name="{{ name }}" type="{{ kind }}" value="{{ value }}"'
                   '{{ " required" if required else "" }}>{% endmacro %}\r\n'
                   "{% macro twice(value) %}{{ field('a', value) }}{{ field('b', value) }}"
                   "{% endmacro %}\n",
    "layout.html": "<nav>{{ active or 'none' }}</nav>\r\n{% block body %}{% endblock %}\n\n",
    "child.html": '{% extends "layout.html" %}\n{% set active = "here" %}\n'
                  "{% block body %}[{% include 'included.html' %}]{% endblock %}\n",
    "included.html": "{% for x in l %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}"
                     "{% else %}empty{% endfor %}\r\n",
    "whitespace.html": "a\n  {%- if v %} b {% endif -%}\n  c {# comment #}\n\n",
    "lookups.html": '{{ d["from"] }}|{{ d["items"] }}|{{ d.to or "—" }}|{{ d.missing }}|'
                    "{{ d.nothing.deeper }}",
}
# What the two engines print differently, and the rules for shared templates therefore ban.
DIFFERENT = {
    "printed.html": "{{ v }}",  # None, True, False, 37.0, a list
}


def test_the_environments_agree_on_escaping_filters_macros_and_whitespace(app):
    awkward = "".join(chr(c) for c in range(1, 128)) + AWKWARD + "é中文😀"
    words = ["", "a", "ab-cd", AWKWARD, "<script>alert('x')</script>", 'say "hi" & go \\ now']
    lists = [[], ["one"], ["<a>", "b & c", "d'e"], [AWKWARD, "x"]]
    cases = [{"name": "escape.html", "context": {"v": v}} for v in [*words, awkward]]
    cases += [{"name": "capitalize.html", "context": {"v": v}} for v in _unicode_sample()]
    cases += [{"name": "urlencode.html", "context": {"v": v}} for v in [
        *words, awkward, "a/b c", 5, None, {"a b": "c&d", "e": "f/g"}, [["x", "y z"], ["ü", 1]]]]
    cases += [{"name": "strings.html", "context": {"v": v, "l": l}}
              for v, l in zip(words + words[:1], lists + lists)]
    cases += [{"name": "filters.html", "context": {"v": v}} for v in [
        "2026-11-21", "2026-11-21T10:04:00Z", "2026-01-01T01:30:00+03:00", "", "x", None, 37.5,
        72, "5.5"]]
    cases += [{"name": n, "context": {"v": v, "l": l}} for n in ("macros.html", "child.html")
              for v, l in [(AWKWARD, ["a", "<b>"]), ("", [])]]
    cases += [{"name": "whitespace.html", "context": {"v": v}} for v in (True, False)]
    cases += [{"name": "lookups.html", "context": {"d": d}} for d in [
        {"from": AWKWARD, "items": "x", "to": "y", "nothing": None},
        {"from": "", "items": "", "to": None, "nothing": None}]]
    different = [{"name": "printed.html", "context": {"v": v}}
                 for v in (None, True, False, 37.0, ["a"])]

    sources = {**CONSTRUCTS, **DIFFERENT}
    jinja = app.jinja_env.overlay(loader=DictLoader(sources))
    results = run_nunjucks(sources, cases + different)
    problems = []
    for case, result in zip(cases, results):
        expected = jinja.get_template(case["name"]).render(case["context"])
        if result.get("html") != expected:
            problems.append(f"{case['name']} {json.dumps(case['context'])[:200]}:\n"
                            f"  jinja2   {expected!r}\n  nunjucks {result!r}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:20])
    for case, result in zip(different, results[len(cases):]):
        expected = jinja.get_template(case["name"]).render(case["context"])
        assert result["html"] != expected, (
            f"{case} now prints the same in both: update the rules in shared_templates.py")
