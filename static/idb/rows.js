// @ts-check
// Server-confirmed records, one row per (entity, id), each with the version the server
// gave it. Pending local changes are not here: the view replays the outbox on top.
import { runIn } from "./db.js";
import { writeMeta } from "./meta.js";

/** @typedef {import("./db.js").Store} Store */
/** @typedef {import("./db.js").Row} Row */
/**
 * @typedef {{op?: string, entity: string, id: string, version?: number, record?: any}} Change
 * @typedef {{entity: string, id: string, version?: number, record: any}} Item
 */

/** Ops that take a record away; every other op stores one. */
const REMOVING_OPS = new Set(["evict", "delete"]);

/**
 * Which patient a row belongs to, so evicting a patient can find everything of theirs.
 * @param {string} entity
 * @param {string} id
 * @param {any} record
 * @returns {string|null}
 */
function patientIdOf(entity, id, record) {
  if (entity === "patient") return record?.id ?? id;
  const pid = record?.patient_id;
  return typeof pid === "string" ? pid : null;
}

/**
 * @param {Item} item
 * @returns {number}
 */
function versionOf(item) {
  const v = item.version ?? item.record?.version;
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

/**
 * Store `item` unless the row held is at least as new: answers and pages arrive out of
 * order (a push answer after a pull that already carried a later edit), and an older
 * version must never replace a newer one.
 * @param {any} store the `rows` store of a readwrite transaction
 * @param {Item} item
 * @returns {Promise<number>} 1 when stored, else 0
 */
export async function putRowIn(store, item) {
  const version = versionOf(item);
  /** @type {Row|undefined} */
  const held = await store.get([item.entity, item.id]);
  if (held !== undefined && held.version >= version) return 0;
  /** @type {Row} */
  const row = {
    entity: item.entity,
    id: item.id,
    version,
    patient_id: patientIdOf(item.entity, item.id, item.record),
    record: item.record,
  };
  await store.put(row);
  return 1;
}

/**
 * Remove a row; removing a patient removes every row of that patient with it, since the
 * device may no longer hold any of their data.
 * @param {any} store the `rows` store of a readwrite transaction
 * @param {string} entity
 * @param {string} id
 * @returns {Promise<number>} rows removed
 */
async function removeRowIn(store, entity, id) {
  const keys = [];
  if ((await store.getKey([entity, id])) !== undefined) keys.push([entity, id]);
  if (entity === "patient") {
    for (const key of await store.index("patient_id").getAllKeys(id)) {
      if (!(key[0] === entity && key[1] === id)) keys.push(key);
    }
  }
  await Promise.all(keys.map((key) => store.delete(key)));
  return keys.length;
}

/**
 * Apply a page of pulled changes in one transaction.
 *
 * `options.meta` is written to `meta` in the same transaction, so the cursor can never
 * run ahead of the rows it covers; `options.reset` clears every row first (a pull that
 * answered `reset: true`), so a crash cannot leave a half-cleared copy behind.
 * @param {Store} db
 * @param {Change[]} changes
 * @param {{meta?: Record<string, any>, reset?: boolean}} [options]
 * @returns {Promise<number>} rows stored or removed
 */
export async function applyChanges(db, changes, options = {}) {
  const stores = options.meta ? ["rows", "meta"] : ["rows"];
  const tx = db.transaction(stores, "readwrite", { durability: "strict" });
  return runIn(tx, async () => {
    const rows = tx.objectStore("rows");
    if (options.reset) await rows.clear();
    let changed = 0;
    for (const change of changes) {
      if (REMOVING_OPS.has(change.op ?? "")) {
        changed += await removeRowIn(rows, change.entity, change.id);
      } else {
        changed += await putRowIn(rows, /** @type {Item} */ (change));
      }
    }
    if (options.meta) await writeMeta(tx.objectStore("meta"), options.meta);
    return changed;
  });
}

/**
 * Store records answered by a push, with the same version rule as a pull.
 * @param {Store} db
 * @param {Item[]} items
 * @returns {Promise<number>} rows stored
 */
export async function putRecords(db, items) {
  const tx = db.transaction("rows", "readwrite", { durability: "strict" });
  return runIn(tx, async () => {
    let changed = 0;
    for (const item of items) changed += await putRowIn(tx.store, item);
    return changed;
  });
}

/**
 * @param {Store} db
 * @param {string} entity
 * @param {string} id
 * @returns {Promise<any>} the record, or undefined
 */
export async function getRecord(db, entity, id) {
  /** @type {Row|undefined} */
  const row = await db.get("rows", [entity, id]);
  return row?.record;
}

/**
 * Every row of one patient, the patient's own included.
 * @param {Store} db
 * @param {string} patientId
 * @returns {Promise<{entity: string, id: string, version: number, record: any}[]>}
 */
export async function recordsOfPatient(db, patientId) {
  /** @type {Row[]} */
  const rows = await db.getAllFromIndex("rows", "patient_id", patientId);
  return rows.map(({ entity, id, version, record }) => ({ entity, id, version, record }));
}

/**
 * @param {Store} db
 * @param {string} entity
 * @returns {Promise<any[]>} the records
 */
export async function recordsOfEntity(db, entity) {
  /** @type {Row[]} */
  const rows = await db.getAllFromIndex("rows", "entity", entity);
  return rows.map((row) => row.record);
}

/** @param {Store} db */
export async function countRows(db) {
  return db.count("rows");
}

/** @param {Store} db */
export async function clearRows(db) {
  const tx = db.transaction("rows", "readwrite", { durability: "strict" });
  await Promise.all([tx.store.clear(), tx.done]);
}
