// @ts-check
// A store whose data key is gone (a forgotten password, or too many wrong ones wiped the
// slot) still holds the person's queued and refused changes, escrowed to the server
// (escrow.js). Once the person signs in online, the server opens those escrows for them
// and the store takes a new key: every change keeps its place, mid and seq, and is sent the
// ordinary way. What cannot be read any more and can be had again goes: the rows and the
// cursor (pulled again), the answered mutations in `sent`, and the device's own notes
// (conflicts shown, reads not yet reported).
import { runIn } from "./db.js";
import { encryptPart, encryptRefusal } from "./outbox.js";
import { rowsChanged } from "./rows.js";
import { attachKey } from "./vault.js";

const STRICT = /** @type {const} */ ({ durability: "strict" });

/** Meta entries encrypted under the old key, or tied to rows that go with it. */
const LOST_WITH_THE_KEY = ["cursor", "initial_sync", "conflicts", "reports", "patient_index"];
/** The reports not yet sent, one entry each (sw.js report()). */
const REPORTS = IDBKeyRange.bound("report:", "report:\uffff");

/**
 * @typedef {import("./outbox.js").StoredEntry} StoredEntry
 * @typedef {import("./outbox.js").StoredQuarantined} StoredQuarantined
 * @typedef {{data: Record<string, any>, base?: Record<string, any>}} Said
 */

/**
 * Every change waiting in the store, as the server needs it to open the escrows.
 * @param {any} db a store opened without its key
 * @returns {Promise<{parts: {mid: string, escrow: any}[], unescrowed: number}>}
 *   `unescrowed`: parts queued before the device knew the server's key, which only the
 *   old key opens
 */
export async function escrowedParts(db) {
  const [queued, refused] = await Promise.all([db.getAll("outbox"), db.getAll("quarantine")]);
  const entries = [...queued, ...refused.map((/** @type {StoredQuarantined} */ q) => q.mutation)];
  // An entry queued before the store was encrypted has no parts: it reads without any key.
  const parts = entries.flatMap((/** @type {StoredEntry} */ entry) => entry.parts ?? []);
  const escrowed = parts.filter((part) => part.escrow);
  return {
    parts: escrowed.map((part) => ({ mid: part.mid, escrow: part.escrow })),
    unescrowed: parts.length - escrowed.length,
  };
}

/**
 * Put the store under `key`: the queued and refused changes encrypted again from what the
 * server opened, everything else that needed the old key dropped, in one transaction.
 * @param {any} db
 * @param {CryptoKey} key
 * @param {Record<string, Said>} opened mid → what that mutation said
 * @param {Record<string, any>} refusals mid → the server's reason, for refused changes
 */
export async function rekey(db, key, opened, refusals) {
  const [queued, refused] = await Promise.all([db.getAll("outbox"), db.getAll("quarantine")]);
  /** @param {StoredEntry} entry */
  const again = async (entry) => !("parts" in entry) ? entry : ({
    ...entry,
    parts: await Promise.all(entry.parts.map(async (part) => {
      const said = opened[part.mid];
      if (!said) throw new Error(`the server did not open change ${part.mid}`);
      return { ...part, secret: await encryptPart(key, part.mid, said) };
    })),
  });
  const outbox = await Promise.all(queued.map(again));
  const quarantine = await Promise.all(refused.map(async (/** @type {StoredQuarantined} */ held) => ({
    ...held,
    mutation: await again(held.mutation),
    error: await encryptRefusal(key, held.mid, refusals[held.mid] ?? {
      code: "refused", message: "The server refused this change. Correct it and send it again, or discard it.",
    }),
  })));

  const tx = db.transaction(["outbox", "quarantine", "rows", "sent", "meta"], "readwrite", STRICT);
  await runIn(tx, async () => {
    await Promise.all([
      ...outbox.map((entry) => tx.objectStore("outbox").put(entry)),
      ...quarantine.map((held) => tx.objectStore("quarantine").put(held)),
      tx.objectStore("rows").clear(),
      tx.objectStore("sent").clear(),
      ...LOST_WITH_THE_KEY.map((name) => tx.objectStore("meta").delete(name)),
      tx.objectStore("meta").delete(REPORTS),
    ]);
  });
  attachKey(db, key);
  rowsChanged(db, { reset: true });
}
