// @ts-check
// One IndexedDB database per signed-in user on this device, so staff sharing a tablet
// never read each other's store and one user's sign-out never touches another's queue.
import { deleteDB, openDB } from "./idb.js";
import { attachKey } from "./vault.js";

/** Bump by one for every schema change and add an `if (oldVersion < N)` step below. */
export const DB_VERSION = 3;

const NAME_PREFIX = "clinic-record:";


/** @param {string} userId */
export function storeName(userId) {
  if (typeof userId !== "string" || userId === "") {
    // A missing id would silently open "clinic-record:undefined", shared by everyone.
    throw new TypeError("openStore needs the signed-in user's id");
  }
  return NAME_PREFIX + userId;
}

/**
 * Open (creating or upgrading as needed) the user's database, with the data key that
 * encrypts its records (vault.js). Without the key (the device is locked) only what is
 * kept in the clear can be read: positions, the session, counts; records refuse.
 * @param {string} userId
 * @param {CryptoKey|null} key
 */
export async function openStore(userId, key) {
  const db = await openDB(storeName(userId), DB_VERSION, {
    upgrade(/** @type {any} */ database, /** @type {number} */ oldVersion,
      /** @type {number|null} */ _newVersion, /** @type {any} */ transaction) {
      // Steps are cumulative so a device that skipped releases upgrades through each one.
      // A later step may add stores or indexes, or rewrite `rows` (they can be pulled
      // again), but must carry every outbox, sent and quarantine entry across unchanged.
      if (oldVersion < 1) {
        const rows = database.createObjectStore("rows", { keyPath: ["entity", "id"] });
        rows.createIndex("patient_id", "patient_id");
        const outbox = database.createObjectStore("outbox", { keyPath: "mid" });
        outbox.createIndex("order", "order", { unique: true });
        const sent = database.createObjectStore("sent", { keyPath: "mid" });
        sent.createIndex("seq", "seq");
        const meta = database.createObjectStore("meta");
        database.createObjectStore("quarantine", { keyPath: "mid" });
        // Written here so every reader sees the protocol's starting points, never undefined.
        meta.put(1, "next_seq");
        meta.put(0, "acked_seq");
        meta.put(1, "next_order"); // outbox position; internal to outbox.js
      }
      if (oldVersion === 1) {
        // Rows were kept in the clear before version 2: drop them and pull them again,
        // encrypted. Queued mutations stay and are sent as they are.
        transaction.objectStore("rows").clear();
        const meta = transaction.objectStore("meta");
        meta.delete("cursor");
        meta.delete("initial_sync");
      }
      if (oldVersion >= 1 && oldVersion < 3) {
        // One entity's rows are already one range of the primary key ([entity, id]; see
        // rows.js entityRange), so an index on `entity` only cost every put a second index
        // entry: about a quarter of IndexedDB's work in a first sync. The rows stay.
        transaction.objectStore("rows").deleteIndex("entity");
      }
    },
    blocking(/** @type {number} */ _current, /** @type {number|null} */ _wanted,
      /** @type {IDBVersionChangeEvent} */ event) {
      // Another context wants a newer version, or is deleting the database (sign-out).
      // Holding the connection open would stall it forever. Calls on this connection then
      // fail with InvalidStateError, and the caller opens the store again.
      /** @type {IDBDatabase} */ (event.target).close();
    },
  });
  if (key) attachKey(db, key);
  return db;
}

/** @typedef {Awaited<ReturnType<typeof openStore>>} Store */

/**
 * Delete the user's database. Callers check the outbox is empty first: this is how a
 * device forgets a user, and queued mutations must never be lost that way by accident.
 * @param {string} userId
 */
export async function deleteStore(userId) {
  await deleteDB(storeName(userId));
}

/**
 * Run `work` inside `tx` and wait for the commit. If `work` throws, the transaction is
 * aborted, so nothing it wrote half-way is kept.
 * @template T
 * @param {any} tx an idb transaction
 * @param {() => Promise<T>} work
 * @returns {Promise<T>}
 */
export async function runIn(tx, work) {
  /** @type {T} */
  let result;
  try {
    result = await work();
  } catch (error) {
    try {
      tx.abort();
    } catch {
      // Already aborted by the failed request itself.
    }
    await tx.done.catch(() => {});
    throw error;
  }
  await tx.done;
  return result;
}
