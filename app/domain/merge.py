"""Three-way merge of fields against the values the client based its edit on."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MergeOutcome:
    apply: dict = field(default_factory=dict)       # fields to write
    unchanged: list = field(default_factory=list)   # already equal to what the client wants
    conflicts: list = field(default_factory=list)   # changed on the server to something else


def merge_fields(server: dict, base: dict | None, incoming: dict, base_version_matches: bool) -> MergeOutcome:
    """Apply a field when the server still holds what the client saw; otherwise it conflicts.

    A field whose base the client did not send is judged by the record's version:
    unchanged record, the edit applies; changed record, a person decides.
    """
    outcome = MergeOutcome()
    base = base or {}
    for name, wanted in incoming.items():
        current = server.get(name)
        if current == wanted:
            outcome.unchanged.append(name)
        elif name in base:
            if base[name] == current:
                outcome.apply[name] = wanted
            else:
                outcome.conflicts.append(name)
        elif base_version_matches:
            outcome.apply[name] = wanted
        else:
            outcome.conflicts.append(name)
    return outcome
