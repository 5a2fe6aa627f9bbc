// @ts-check
// What a page shows is the server's confirmed records with this device's pending mutations
// replayed on top (DESIGN.md §4). Each replay is the display-side twin of a server handler in
// app/services/handlers/: it shapes records the way Model.to_record() does, so templates and
// contexts need not know whether a record is confirmed. Replayed records carry `pending: true`.
// The server stays the judge: when its answer arrives, the confirmed record replaces these.

/** @typedef {{entity: string, id: string, version: number, record: any}} Row */
/** @typedef {Map<string, any>} Records  key "entity:id" → record */

export const key = (entity, id) => `${entity}:${id}`;

/** @param {Row[]} rows */
export function recordsFrom(rows) {
  /** @type {Records} */
  const records = new Map();
  for (const row of rows) records.set(key(row.entity, row.id), row.record);
  return records;
}

/**
 * Apply pending mutations, oldest first, to a copy of `records`.
 * @param {Records} records
 * @param {any[]} mutations outbox entries
 */
export function withPending(records, mutations) {
  const out = new Map(records);
  for (const mutation of mutations) {
    const handler = REPLAY[mutation.type];
    if (handler) handler(out, mutation);
  }
  return out;
}

const stamp = (m) => m.client_ts || m.created_at || new Date().toISOString();

function put(records, entity, id, record) {
  records.set(key(entity, id), { ...record, pending: true });
}

function change(records, entity, id, fields) {
  const held = records.get(key(entity, id));
  if (!held) return null;
  // Each change the server applies adds one to the version; counting the same way here lets
  // a second offline change of a record name the version the first one will have made.
  const next = { ...held, ...fields, version: (held.version || 0) + 1, pending: true };
  records.set(key(entity, id), next);
  return next;
}

function touchPatient(records, patientId, m, fields = {}) {
  return change(records, "patient", patientId, { ...fields, updated_at: stamp(m) });
}

const REPLAY = {
  "patient.register"(records, m) {
    const d = m.data;
    const at = stamp(m);
    const identifiers = (d.identifiers || []).map((ident, i) => ({
      id: `${m.entity_id}-identifier-${i}`, system: ident.system, value: ident.value,
    }));
    put(records, "patient", m.entity_id, {
      id: m.entity_id, version: 1, given_name: d.given_name, family_name: d.family_name,
      sex: d.sex, birth_date: d.birth_date, phone: d.phone ?? null, address: d.address ?? null,
      clinic_id: d.clinic_id, created_at: at, updated_at: at, identifiers,
    });
  },
  "patient.update"(records, m) {
    touchPatient(records, m.entity_id, m, m.data);
  },
  "patient.identifier.add"(records, m) {
    const patient = records.get(key("patient", m.data.patient_id));
    if (!patient) return;
    touchPatient(records, patient.id, m, {
      identifiers: [...(patient.identifiers || []),
        { id: m.entity_id, system: m.data.system, value: m.data.value }],
    });
  },
  "patient.identifier.retire"(records, m) {
    for (const [k, patient] of records) {
      if (!k.startsWith("patient:") || !(patient.identifiers || []).some((i) => i.id === m.entity_id)) continue;
      touchPatient(records, patient.id, m, {
        identifiers: patient.identifiers.filter((i) => i.id !== m.entity_id),
      });
    }
  },
  "visit.start"(records, m) {
    const d = m.data;
    const at = stamp(m);
    put(records, "visit", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, clinic_id: d.clinic_id,
      station: d.station, status: "in-progress", reason: d.reason ?? null, started_at: at,
      ended_at: null, station_since: at, updated_at: at,
    });
  },
  "visit.move"(records, m) {
    const at = stamp(m);
    const done = m.data.station === "done";
    change(records, "visit", m.entity_id, {
      station: m.data.station, station_since: at, status: done ? "finished" : "in-progress",
      ended_at: done ? at : null, updated_at: at,
    });
  },
  "observation.record"(records, m) {
    const d = m.data;
    put(records, "observation", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, visit_id: d.visit_id ?? null,
      code: d.code, value: d.value, unit: d.unit, effective_at: d.effective_at,
      created_by: m.author ?? null, created_at: stamp(m),
    });
  },
  "condition.add"(records, m) {
    const d = m.data;
    const at = stamp(m);
    put(records, "condition", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, visit_id: d.visit_id ?? null,
      code: d.code ?? null, text: d.text, clinical_status: "active",
      onset_date: d.onset_date ?? null, resolved_at: null, created_at: at, updated_at: at,
    });
  },
  "condition.resolve"(records, m) {
    change(records, "condition", m.entity_id, { clinical_status: "resolved", resolved_at: stamp(m) });
  },
  "note.write"(records, m) {
    const d = m.data;
    const at = stamp(m);
    put(records, "note", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, visit_id: d.visit_id ?? null,
      text: d.text, status: "draft", created_by: m.author ?? null, signed_by: null,
      signed_at: null, created_at: at, updated_at: at, addenda: [],
    });
  },
  "note.edit"(records, m) {
    change(records, "note", m.entity_id, { text: m.data.text, updated_at: stamp(m) });
  },
  "note.sign"(records, m) {
    change(records, "note", m.entity_id, {
      status: "signed", signed_by: m.author ?? null, signed_at: stamp(m), updated_at: stamp(m),
    });
  },
  "note.amend"(records, m) {
    const note = records.get(key("note", m.data.note_id));
    if (!note) return;
    const addendum = {
      id: m.entity_id, version: 1, note_id: note.id, patient_id: note.patient_id,
      text: m.data.text, created_by: m.author ?? null, created_at: stamp(m), pending: true,
    };
    change(records, "note", note.id, { addenda: [...(note.addenda || []), addendum] });
  },
  "medication.order"(records, m) {
    const d = m.data;
    const at = stamp(m);
    put(records, "medication_request", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, visit_id: d.visit_id ?? null,
      medication: d.medication, dose: d.dose, route: d.route, frequency: d.frequency,
      duration_days: d.duration_days ?? null, quantity: d.quantity, quantity_dispensed: 0,
      status: "active", created_by: m.author ?? null, created_at: at, updated_at: at,
    });
  },
  "appointment.book"(records, m) {
    // Only the server grants a slot: until it answers, this is a request, not a booking.
    const d = m.data;
    const at = stamp(m);
    put(records, "appointment", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, clinic_id: d.clinic_id,
      starts_at: d.starts_at, reason: d.reason ?? null, status: "requested",
      created_at: at, updated_at: at,
    });
  },
  "appointment.cancel"(records, m) {
    change(records, "appointment", m.entity_id, { status: "cancelled", updated_at: stamp(m) });
  },
  "consent.record"(records, m) {
    const d = m.data;
    put(records, "consent", m.entity_id, {
      id: m.entity_id, version: 1, patient_id: d.patient_id, visit_id: d.visit_id ?? null,
      scope: d.scope, signer_name: d.signer_name, signer_relation: d.signer_relation,
      signature_png: d.signature_png, signed_at: d.signed_at || stamp(m), created_at: stamp(m),
    });
  },
};
