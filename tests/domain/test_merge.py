"""Three-way merge of demographic and note fields (app/domain/merge.py)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.merge import merge_fields


def test_field_still_at_its_base_value_takes_the_clients_edit():
    outcome = merge_fields(server={"phone": "0700", "address": "Old road"},
                           base={"phone": "0700"}, incoming={"phone": "0711"},
                           base_version_matches=False)
    assert outcome.apply == {"phone": "0711"}
    assert outcome.conflicts == [] and outcome.unchanged == []


def test_field_changed_on_server_since_base_is_a_conflict_and_not_applied():
    outcome = merge_fields(server={"phone": "0722"}, base={"phone": "0700"},
                           incoming={"phone": "0711"}, base_version_matches=False)
    assert outcome.conflicts == ["phone"]
    assert outcome.apply == {}


def test_same_value_on_both_sides_is_unchanged_not_a_conflict():
    # Two devices made the same correction: nothing to ask a person.
    outcome = merge_fields(server={"phone": "0711"}, base={"phone": "0700"},
                           incoming={"phone": "0711"}, base_version_matches=False)
    assert outcome.unchanged == ["phone"]
    assert outcome.apply == {} and outcome.conflicts == []


def test_disjoint_edits_merge_and_overlap_conflicts_in_one_call():
    server = {"given_name": "Test", "phone": "0722", "address": "New road"}
    base = {"given_name": "Test", "phone": "0700"}
    outcome = merge_fields(server, base, {"given_name": "Tess", "phone": "0711"},
                           base_version_matches=False)
    assert outcome.apply == {"given_name": "Tess"}
    assert outcome.conflicts == ["phone"]


def test_field_without_base_applies_only_when_record_version_is_unchanged():
    server = {"address": "Old road"}
    same_version = merge_fields(server, {}, {"address": "Hill road"}, base_version_matches=True)
    assert same_version.apply == {"address": "Hill road"}
    newer_version = merge_fields(server, None, {"address": "Hill road"}, base_version_matches=False)
    assert newer_version.conflicts == ["address"] and newer_version.apply == {}


def test_clearing_a_field_to_none_is_an_edit_like_any_other():
    outcome = merge_fields(server={"phone": "0700"}, base={"phone": "0700"},
                           incoming={"phone": None}, base_version_matches=False)
    assert outcome.apply == {"phone": None}


def test_base_of_none_for_a_field_the_server_later_filled_is_a_conflict():
    outcome = merge_fields(server={"phone": "0722"}, base={"phone": None},
                           incoming={"phone": "0711"}, base_version_matches=True)
    assert outcome.conflicts == ["phone"]


def test_fields_the_client_did_not_send_are_never_touched():
    outcome = merge_fields(server={"phone": "0700", "address": "Old road"},
                           base={"phone": "0700", "address": "Something else"},
                           incoming={"phone": "0711"}, base_version_matches=False)
    assert set(outcome.apply) == {"phone"}
    assert "address" not in outcome.conflicts + outcome.unchanged


FIELDS = ("given_name", "family_name", "phone", "address")
VALUES = st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))


@settings(max_examples=400, database=None, deadline=None)
@given(server=st.dictionaries(st.sampled_from(FIELDS), VALUES),
       base=st.one_of(st.none(), st.dictionaries(st.sampled_from(FIELDS), VALUES)),
       incoming=st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1),
       base_version_matches=st.booleans())
def test_merge_never_loses_a_client_change_without_reporting_a_conflict(
        server, base, incoming, base_version_matches):
    outcome = merge_fields(dict(server), base, incoming, base_version_matches)
    merged = {**server, **outcome.apply}

    for name, wanted in incoming.items():
        # Every field the client sent ends as its value, or is reported for a person to decide.
        assert merged.get(name) == wanted or name in outcome.conflicts, name
        # ...and is accounted for exactly once.
        buckets = [name in outcome.apply, name in outcome.unchanged, name in outcome.conflicts]
        assert buckets.count(True) == 1, (name, outcome)
    for name in outcome.conflicts:
        # A conflict is only raised when the server holds something else than the client wants
        # and the server's value is not the one the client saw.
        assert server.get(name) != incoming[name]
        if base and name in base:
            assert base[name] != server.get(name)
        else:
            assert not base_version_matches
    # Nothing outside what the client sent is written.
    assert set(outcome.apply) <= set(incoming)
    assert all(outcome.apply[k] == incoming[k] for k in outcome.apply)
