// @ts-check
// Mutations the server rejected for good (validation, permission). They wait here for a
// person to correct and resend them or to discard them; nothing leaves without one.
import { runIn } from "./db.js";
import { enqueueIn, openEntry, openQuarantined, prepareMutations } from "./outbox.js";

/** @typedef {import("./db.js").Store} Store */
/** @typedef {import("./outbox.js").Quarantined} Quarantined */
/** @typedef {import("./outbox.js").Mutation} Mutation */
/** @typedef {import("./outbox.js").Entry} Entry */
/** @typedef {import("./outbox.js").Policies} Policies */

const STRICT = /** @type {const} */ ({ durability: "strict" });

/**
 * @param {Store} db
 * @returns {Promise<Quarantined[]>} oldest first
 */
export async function listQuarantine(db) {
  const all = await Promise.all((await db.getAll("quarantine")).map(
    (/** @type {any} */ held) => openQuarantined(db, held)));
  return all.sort((a, b) =>
    a.quarantined_at.localeCompare(b.quarantined_at) ||
    (a.mutation.seq ?? 0) - (b.mutation.seq ?? 0));
}

/**
 * @param {Store} db
 * @param {string} mid
 * @returns {Promise<Quarantined|undefined>}
 */
export async function getQuarantined(db, mid) {
  const held = await db.get("quarantine", mid);
  return held ? openQuarantined(db, held) : undefined;
}

/**
 * A new mutation carrying the corrected data. It needs a new mid: the server has stored
 * its rejection under the old one and would answer a replay with that rejection again.
 * @param {Quarantined} held
 * @param {Record<string, any>|undefined} data
 * @returns {Mutation}
 */
function resendOf(held, data) {
  const old = held.mutation;
  /** @type {any} */
  const mutation = {
    mid: crypto.randomUUID(),
    type: old.type,
    entity: old.entity,
    entity_id: old.entity_id,
    data: data ?? old.data,
  };
  for (const field of ["base", "base_version", "deps", "patient_id", "author"]) {
    const value = /** @type {any} */ (old)[field];
    if (value !== undefined) mutation[field] = value;
  }
  return mutation;
}

/**
 * Remove a quarantined mutation and return a new one to enqueue with `data` (the original
 * data when `data` is undefined). Between this and the caller's enqueue the mutation
 * exists only in memory; `resend` does both in one transaction.
 * @param {Store} db
 * @param {string} mid
 * @param {Record<string, any>} [data]
 * @returns {Promise<Mutation|undefined>} undefined when no such mid is quarantined
 */
export async function takeForResend(db, mid, data) {
  const tx = db.transaction("quarantine", "readwrite", STRICT);
  const held = await runIn(tx, async () => {
    const stored = await tx.store.get(mid);
    if (stored) await tx.store.delete(mid);
    return stored;
  });
  return held ? resendOf(await openQuarantined(db, held), data) : undefined;
}

/**
 * takeForResend and enqueue in one transaction, so a crash cannot lose the mutation
 * between the two.
 * @param {Store} db
 * @param {string} mid
 * @param {Record<string, any>|undefined} data
 * @param {Policies} policies
 * @returns {Promise<Entry|undefined>} the outbox entry now holding it
 */
export async function resend(db, mid, data, policies) {
  // Read and encrypted first (WebCrypto cannot run inside a transaction); the move itself is
  // one transaction, and finds nothing to move if a discard got there in between.
  const held = await getQuarantined(db, mid);
  if (!held) return undefined;
  const prepared = await prepareMutations(db, [resendOf(held, data)]);
  const tx = db.transaction(["quarantine", "outbox", "meta"], "readwrite", STRICT);
  const entry = await runIn(tx, async () => {
    const quarantine = tx.objectStore("quarantine");
    if ((await quarantine.getKey(mid)) === undefined) return undefined;
    await quarantine.delete(mid);
    const [stored] = await enqueueIn(tx, prepared, policies);
    return stored;
  });
  return entry ? openEntry(db, entry) : undefined;
}

/**
 * Remove a quarantined mutation for good and return it, for the caller to report the
 * discard to the server's audit log.
 * @param {Store} db
 * @param {string} mid
 * @returns {Promise<Quarantined|undefined>}
 */
export async function discard(db, mid) {
  const tx = db.transaction("quarantine", "readwrite", STRICT);
  const held = await runIn(tx, async () => {
    const stored = await tx.store.get(mid);
    if (stored) await tx.store.delete(mid);
    return stored;
  });
  return held ? openQuarantined(db, held) : undefined;
}
