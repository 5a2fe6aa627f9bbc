// @ts-check
// The rows of the last few patients whose pages were shown, decrypted and kept in the
// worker's memory: a chart, its visit, its vitals form and the chart again are opened one
// after another, and each would read and decrypt the same few hundred rows. Nothing of it is
// written; it follows every committed change to the rows (rows.js watchRows) and goes with
// the data key (dropPatientRows).
import { recordsOfPatient, watchRows } from "/static/idb/rows.js";
import { keyOf } from "/static/idb/vault.js";

const KEPT = 8;

/** @typedef {{entity: string, id: string, version: number, record: any}} Row */

/** @type {{store: string|null, key: CryptoKey|null, changes: number, byPatient: Map<string, Row[]>}} */
let kept = { store: null, key: null, changes: 0, byPatient: new Map() };

/** @param {any} item */
function patientOf(item) {
  if (item.entity === "patient") return item.record?.id ?? item.id;
  const pid = item.record?.patient_id;
  return typeof pid === "string" ? pid : null;
}

watchRows((db, change) => {
  if (kept.store !== db.name) return;
  kept.changes += 1;
  // A row removed says only its own id, not whose it was.
  const removedOther = (change.removed || []).some((item) => item.entity !== "patient");
  if (change.reset || removedOther) {
    kept.byPatient.clear();
    return;
  }
  for (const item of change.removed || []) kept.byPatient.delete(item.id);
  for (const item of change.stored || []) {
    const pid = patientOf(item);
    if (pid === null) kept.byPatient.clear();
    else kept.byPatient.delete(pid);
  }
});

/**
 * Every row of one patient, the patient's own included, as rows.js recordsOfPatient gives
 * them. Not to be changed by the caller.
 * @param {any} db an open store with its key (LockedError otherwise)
 * @param {string} patientId
 * @returns {Promise<Row[]>}
 */
export async function rowsOfPatient(db, patientId) {
  const key = keyOf(db);
  if (kept.store !== db.name || kept.key !== key) kept = { store: db.name, key, changes: 0, byPatient: new Map() };
  const held = kept.byPatient.get(patientId);
  if (held) {
    kept.byPatient.delete(patientId); // the most recently used go last
    kept.byPatient.set(patientId, held);
    return held;
  }
  const asked = kept;
  const changesBefore = asked.changes;
  const rows = await recordsOfPatient(db, patientId);
  // Kept only if nothing changed while they were read, and the key is still the one.
  if (kept === asked && asked.changes === changesBefore && rows.length) {
    asked.byPatient.set(patientId, rows);
    while (asked.byPatient.size > KEPT) asked.byPatient.delete(/** @type {string} */ (asked.byPatient.keys().next().value));
  }
  return rows;
}

/** The key has left the worker: so do the rows read with it. */
export function dropPatientRows() {
  kept = { store: null, key: null, changes: 0, byPatient: new Map() };
}
