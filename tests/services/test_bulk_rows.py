"""Rows written in bulk land as the ORM would write them, whichever way they are sent."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from app.domain.ids import new_id
from app.extensions import db
from app.models import Clinic, EntityHistory, Organization
from app.services.bulk_rows import FEW_ROWS, insert_into_tables, insert_rows
from app.services.writes import with_defaults

pytestmark = pytest.mark.postgres


def history_rows(count: int) -> list[dict]:
    entity_id = new_id()
    return [{"entity": "observation", "entity_id": entity_id, "version": version,
             "record": {"value": version * 1.5, "note": "ünïcode \"quoted\"", "tags": [1, None],
                        "nested": {"at": "2026-11-22T09:00:00Z"}},
             "mid": new_id() if version % 2 else None, "changed_by": None,
             "changed_at": datetime(2026, 11, 22, 9, version, 30, 123456, tzinfo=timezone.utc)}
            for version in range(1, count + 1)]


def stored(entity_id: str) -> list[dict]:
    db.session.expire_all()
    rows = db.session.scalars(select(EntityHistory).where(EntityHistory.entity_id == entity_id)
                              .order_by(EntityHistory.version)).all()
    return [{"entity": r.entity, "entity_id": r.entity_id, "version": r.version,
             "record": r.record, "mid": r.mid, "changed_by": r.changed_by,
             "changed_at": r.changed_at} for r in rows]


@pytest.mark.parametrize("count", [1, FEW_ROWS, FEW_ROWS + 1, 40])
def test_rows_read_back_as_they_were_given(app, count):
    rows = history_rows(count)
    insert_rows(db.session.connection(), EntityHistory.__table__, rows)
    db.session.commit()
    assert stored(rows[0]["entity_id"]) == rows


@pytest.mark.parametrize("count", [FEW_ROWS, FEW_ROWS + 1])
def test_a_row_that_breaks_a_constraint_is_an_integrity_error_and_writes_nothing(app, count):
    rows = history_rows(count)
    rows[-1]["version"] = rows[0]["version"]  # the same (entity, entity_id, version) twice
    with pytest.raises(IntegrityError):
        insert_rows(db.session.connection(), EntityHistory.__table__, rows)
    db.session.rollback()
    assert stored(rows[0]["entity_id"]) == []


def a_clinic_and_its_organization() -> tuple[dict, dict]:
    organization = {"id": new_id(), "name": "Bulk Health", "created_at": datetime.now(timezone.utc)}
    clinic = with_defaults(Clinic, {"id": new_id(), "organization_id": organization["id"],
                                    "name": "Bulk Clinic", "code": new_id()[:12]})
    return clinic, organization


@pytest.mark.parametrize("history_count", [3, FEW_ROWS + 1], ids=["few", "many"])
def test_rows_for_several_tables_land_as_they_were_given(app, history_count):
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(history_count)
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (EntityHistory.__table__, history),
        (Clinic.__table__, [clinic])])
    db.session.commit()
    assert stored(history[0]["entity_id"]) == history
    assert db.session.get(Clinic, clinic["id"]).organization_id == organization["id"]


def test_one_tables_broken_constraint_writes_nothing_to_any_of_them(app):
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(3)
    history[-1]["version"] = history[0]["version"]
    with pytest.raises(IntegrityError):
        insert_into_tables(db.session.connection(), [
            (Organization.__table__, [organization]), (Clinic.__table__, [clinic]),
            (EntityHistory.__table__, history)])
    db.session.rollback()
    assert stored(history[0]["entity_id"]) == []
    assert db.session.get(Organization, organization["id"]) is None


def an_organization_named(name: str) -> str:
    organization_id = new_id()
    db.session.add(Organization(id=organization_id, name=name))
    db.session.commit()
    return organization_id


def write_beside_a_rename(clinic: dict, organization: dict, history: list[dict], renamed: str,
                          new_name: str) -> None:
    """An organization, its clinic and history rows appended, and another organization
    renamed by its id, in one call."""
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (EntityHistory.__table__, history),
        (Clinic.__table__, [clinic])],
        [(Organization.__table__, "id", renamed, {"name": new_name})])


@pytest.mark.parametrize("history_count", [3, FEW_ROWS + 1], ids=["few", "many"])
def test_a_row_changed_by_key_is_changed_with_the_rows_written_beside_it(app, history_count):
    renamed = an_organization_named("Old Name")
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(history_count)
    write_beside_a_rename(clinic, organization, history, renamed, "New Name ü")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Organization, renamed).name == "New Name ü"
    assert db.session.get(Organization, organization["id"]).name == "Bulk Health"
    assert stored(history[0]["entity_id"]) == history


def test_a_broken_constraint_leaves_the_row_changed_by_key_as_it_was(app):
    renamed = an_organization_named("Old Name")
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(3)
    history[-1]["version"] = history[0]["version"]
    with pytest.raises(IntegrityError):
        write_beside_a_rename(clinic, organization, history, renamed, "New Name")
    db.session.rollback()
    db.session.expire_all()
    assert db.session.get(Organization, renamed).name == "Old Name"
    assert db.session.get(Organization, organization["id"]) is None


def organizations_named(*names: str) -> list[str]:
    return [an_organization_named(name) for name in names]


def names_of(organization_ids: list[str]) -> list[str]:
    db.session.expire_all()
    return [db.session.get(Organization, organization_id).name
            for organization_id in organization_ids]


@pytest.mark.parametrize("renamed_count", [2, FEW_ROWS + 1], ids=["few", "many"])
def test_rows_changed_by_id_are_changed_with_the_rows_written_beside_them(app, renamed_count):
    renamed = organizations_named(*(f"Old {n}" for n in range(renamed_count)))
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(FEW_ROWS + 1)
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (EntityHistory.__table__, history),
        (Clinic.__table__, [clinic])], changes=[
        (Organization.__table__, [{"id": organization_id, "name": f"New {n} ü"}
                                  for n, organization_id in enumerate(renamed)])])
    db.session.commit()
    assert names_of(renamed) == [f"New {n} ü" for n in range(renamed_count)]
    assert stored(history[0]["entity_id"]) == history


def test_a_row_to_change_that_is_not_there_writes_nothing(app):
    renamed = organizations_named("Old Name")
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(FEW_ROWS + 1)
    with pytest.raises(StaleDataError):
        insert_into_tables(db.session.connection(), [
            (Organization.__table__, [organization]), (EntityHistory.__table__, history),
            (Clinic.__table__, [clinic])], changes=[
            (Organization.__table__, [{"id": renamed[0], "name": "New Name"},
                                      {"id": new_id(), "name": "Nobody"}])])
    db.session.rollback()
    assert names_of(renamed) == ["Old Name"]
    assert stored(history[0]["entity_id"]) == []


def test_a_row_changed_both_by_key_and_by_id_keeps_both_changes(app):
    organization_id, = organizations_named("First")
    clinic, organization = a_clinic_and_its_organization()
    moved = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (Clinic.__table__, [clinic])],
        [(Organization.__table__, "id", organization_id, {"name": "Second"})],
        [(Organization.__table__, [{"id": organization_id, "created_at": moved}])])
    db.session.commit()
    db.session.expire_all()
    changed = db.session.get(Organization, organization_id)
    assert (changed.name, changed.created_at) == ("Second", moved)


def test_a_column_given_whole_and_decimal_numbers_lands_whole(app):
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(FEW_ROWS + 1)
    history[0]["version"] = 100.0  # a float among ints: sent as one array of floats
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (EntityHistory.__table__, history),
        (Clinic.__table__, [clinic])])
    db.session.commit()
    assert [row["version"] for row in stored(history[0]["entity_id"])] == [
        *range(2, FEW_ROWS + 2), 100]


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite holds no text to a length
@pytest.mark.parametrize("count", [2, FEW_ROWS + 1], ids=["few", "many"])
def test_a_value_too_long_for_its_column_is_refused_not_cut_short(app, backend, count):
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(count)
    history[-1]["entity"] = "x" * 41  # the column holds 40
    with pytest.raises(DBAPIError):
        insert_into_tables(db.session.connection(), [
            (Organization.__table__, [organization]), (EntityHistory.__table__, history),
            (Clinic.__table__, [clinic])])
    db.session.rollback()
    assert stored(history[0]["entity_id"]) == []


def test_a_row_inserted_and_changed_in_one_call_takes_the_change(app):
    clinic, organization = a_clinic_and_its_organization()
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (Clinic.__table__, [clinic])],
        changes=[(Organization.__table__, [{"id": organization["id"], "name": "Renamed"}])])
    db.session.commit()
    assert names_of([organization["id"]]) == ["Renamed"]


def test_a_column_given_values_of_other_kinds_still_lands(app):
    clinic, organization = a_clinic_and_its_organization()
    history = history_rows(FEW_ROWS + 1)
    history[0]["version"] = "100"  # text among ints: no one array holds both
    insert_into_tables(db.session.connection(), [
        (Organization.__table__, [organization]), (EntityHistory.__table__, history),
        (Clinic.__table__, [clinic])])
    db.session.commit()
    assert [row["version"] for row in stored(history[0]["entity_id"])] == [
        *range(2, FEW_ROWS + 2), 100]
