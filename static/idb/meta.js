// @ts-check
// Small named values: client_id, next_seq, acked_seq, cursor, initial_sync, session.
// Keys are out-of-line so a value can be any cloneable thing, including null. Values that
// name patients or quote their data (conflicts, reports) go through the secret variants.
import { decryptJSON, encryptJSON, keyOf } from "./vault.js";

/** @typedef {import("./db.js").Store} Store */

/**
 * @param {Store} db
 * @param {string} key
 * @param {any} [fallback] returned when the key was never set
 */
export async function getMeta(db, key, fallback = undefined) {
  const value = await db.get("meta", key);
  return value === undefined ? fallback : value;
}

/**
 * Set several keys in one transaction, so related positions never disagree after a crash.
 * @param {Store} db
 * @param {Record<string, any>} entries
 */
export async function setMeta(db, entries) {
  const tx = db.transaction("meta", "readwrite", { durability: "strict" });
  await Promise.all([writeMeta(tx.objectStore("meta"), entries), tx.done]);
}

/**
 * Everything in `meta` as one object.
 * @param {Store} db
 * @returns {Promise<Record<string, any>>}
 */
export async function allMeta(db) {
  const tx = db.transaction("meta");
  /** @type {[IDBValidKey[], any[], void]} */
  const [keys, values] = await Promise.all([
    tx.store.getAllKeys(),
    tx.store.getAll(),
    tx.done,
  ]);
  /** @type {Record<string, any>} */
  const out = {};
  keys.forEach((key, i) => {
    out[String(key)] = values[i];
  });
  return out;
}

/**
 * For other modules writing meta inside their own transaction.
 * @param {any} store the `meta` object store of a readwrite transaction
 * @param {Record<string, any>} entries
 */
export function writeMeta(store, entries) {
  return Promise.all(Object.entries(entries).map(([key, value]) =>
    // undefined cannot be told apart from "never set" on read; remove the key instead.
    value === undefined ? store.delete(key) : store.put(value, key)));
}

/**
 * Read a meta key inside another module's transaction.
 * @param {any} store the `meta` object store of that transaction
 * @param {string} key
 * @param {any} fallback
 */
export async function readMeta(store, key, fallback) {
  const value = await store.get(key);
  return value === undefined ? fallback : value;
}

/** @param {string} key */
const metaContext = (key) => `meta\u0000${key}`;

/**
 * A value kept encrypted under the store's data key.
 * @param {Store} db
 * @param {string} key
 * @param {any} [fallback]
 */
export async function getSecretMeta(db, key, fallback = undefined) {
  const held = await db.get("meta", key);
  if (held === undefined) return fallback;
  return decryptJSON(keyOf(db), metaContext(key), held);
}

/**
 * @param {Store} db
 * @param {Record<string, any>} entries
 */
export async function setSecretMeta(db, entries) {
  const dataKey = keyOf(db);
  /** @type {Record<string, any>} */
  const sealed = {};
  for (const [key, value] of Object.entries(entries)) {
    sealed[key] = value === undefined ? undefined : await encryptJSON(dataKey, metaContext(key), value);
  }
  await setMeta(db, sealed);
}

/**
 * Every secret value whose key is in `range`, in key order, read in one transaction.
 * @param {Store} db
 * @param {IDBKeyRange} range
 * @returns {Promise<{key: string, value: any}[]>}
 */
export async function secretMetaIn(db, range) {
  const tx = db.transaction("meta");
  /** @type {[IDBValidKey[], any[], void]} */
  const [keys, values] = await Promise.all([tx.store.getAllKeys(range), tx.store.getAll(range), tx.done]);
  const dataKey = keyOf(db);
  return Promise.all(keys.map(async (key, i) => ({
    key: String(key), value: await decryptJSON(dataKey, metaContext(String(key)), values[i]),
  })));
}
