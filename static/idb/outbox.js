// @ts-check
// The queue of local mutations (DESIGN §4, §5), one record per mutation.
//
// Life of a mutation: enqueued "open" (it may still absorb a later edit of the same
// record), then "sealed" with a seq (immutable from then on, sent in seq order), then
// answered: it moves to `sent` (kept for a server restored from a backup) or, when
// rejected, to `quarantine`. Every step is one strict transaction over all the stores it
// touches, so a crash leaves each mutation in exactly one place.
//
// What a mutation says (its data and base) is encrypted (vault.js) before a transaction
// opens, one part per mutation the person made; an entry that absorbed later edits holds
// their parts in order, and reading it folds them together. Kept in the clear are the
// bookkeeping and the ids the queue orders by: `refs` lists the ids named in the data, so
// sealing can put a create before what refers to it without decrypting anything.
import { runIn } from "./db.js";
import { readMeta, writeMeta } from "./meta.js";
import { prepareRows, putRowIn, rowsChanged } from "./rows.js";
import { escrowFor } from "./escrow.js";
import { decryptJSON, encryptJSON, keyOf } from "./vault.js";

/** How many answered mutations `sent` keeps for a re-push after a server restore. */
export const SENT_KEPT = 5000;

const STRICT = /** @type {const} */ ({ durability: "strict" });

/**
 * @typedef {{policy: string, creates?: boolean}} TypePolicy
 * @typedef {Record<string, TypePolicy>} Policies  schemas_for_browser().types
 *
 * @typedef {object} Mutation
 * @property {string} mid
 * @property {string} type
 * @property {string} entity
 * @property {string} entity_id
 * @property {Record<string, any>} data
 * @property {Record<string, any>} [base]
 * @property {number} [base_version]
 * @property {string[]} [deps]
 * @property {string} [patient_id] local: which chart shows it while pending
 * @property {string} [author] local: who made it on this device
 *
 * @typedef {Mutation & {
 *   order: number, state: "open"|"sealed", created_at: string, seq?: number,
 *   sealed_at?: string, policy?: string, creates?: boolean, absorbed?: string[]
 * }} Entry  an outbox record as read; `absorbed` lists the mids merged into it
 *
 * @typedef {{mid: string, secret: Uint8Array, escrow?: import("./escrow.js").Envelope|null}} Part
 *   one mutation's data and base, encrypted under the data key and, once the server's key
 *   is known, sealed to the server too (its escrow)
 * @typedef {Omit<Entry, "data"|"base"> & {parts: Part[], refs: string[]}} StoredEntry
 * @typedef {Omit<Mutation, "data"|"base"> & {parts: Part[], refs: string[]}} PreparedMutation
 *
 * @typedef {{mid: string, seq: number, type: string, entity: string, entity_id: string,
 *   data: Record<string, any>, base?: Record<string, any>, base_version?: number,
 *   deps?: string[], client_ts: string}} WireMutation
 *
 * @typedef {{mid: string, seq: number, status: string, entity?: string, entity_id?: string,
 *   version?: number, record?: any, error?: any, conflict?: any}} PushResult
 *
 * @typedef {{mid: string, mutation: Entry, error: any, request_id: string|null,
 *   quarantined_at: string}} Quarantined
 * @typedef {{mid: string, mutation: StoredEntry, error: Uint8Array|null,
 *   request_id: string|null, quarantined_at: string}} StoredQuarantined
 */

/** @typedef {import("./db.js").Store} Store */

// Wire fields other than the ones every mutation has; everything else on an entry is local.
const OPTIONAL_WIRE_FIELDS = /** @type {const} */ (["base_version", "base", "deps"]);

/**
 * May `later` be folded into `earlier` instead of being queued on its own?
 *
 * Only a merge-fields patch is ever absorbed, into an open patch of the same type (fields
 * merge exactly as two patches would on the server) or into an open create of the same
 * record (the record is new, so the server sees one complete create). Appends,
 * version-checked and authoritative mutations each mean something on their own.
 * @param {Partial<Entry>} earlier
 * @param {Partial<Entry>} later
 * @param {Policies} policies
 */
export function canMerge(earlier, later, policies) {
  if (!earlier || !later || earlier.mid === later.mid) return false;
  if ((earlier.state ?? "open") !== "open" || (later.state ?? "open") !== "open") return false;
  if (earlier.entity !== later.entity || earlier.entity_id !== later.entity_id) return false;
  // One store per user makes this moot today; it keeps two people's edits apart if not.
  if (earlier.author && later.author && earlier.author !== later.author) return false;
  const first = earlier.type ? policies[earlier.type] : undefined;
  const second = later.type ? policies[later.type] : undefined;
  if (!first || !second || second.policy !== "merge-fields") return false;
  if (first.creates) return first.policy !== "authoritative" && first.policy !== "version";
  return first.policy === "merge-fields" && earlier.type === later.type;
}

/**
 * Fold `later` into `earlier` (canMerge said yes). Its encrypted part is kept after the
 * earlier ones; openEntry merges them.
 * @param {StoredEntry} earlier
 * @param {PreparedMutation} later
 */
function absorb(earlier, later) {
  earlier.parts = [...earlier.parts, ...later.parts];
  earlier.refs = [...new Set([...earlier.refs, ...later.refs])];
  if (later.deps?.length) {
    // The merged mutation now carries the later one's needs too.
    earlier.deps = [...new Set([...(earlier.deps ?? []), ...later.deps])];
  }
  if (earlier.patient_id === undefined && later.patient_id !== undefined) {
    earlier.patient_id = later.patient_id;
  }
  earlier.absorbed = [...(earlier.absorbed ?? []), later.mid];
}

/** @param {Mutation} mutation */
function checkMutation(mutation) {
  for (const field of ["mid", "type", "entity", "entity_id"]) {
    const value = /** @type {any} */ (mutation)?.[field];
    if (typeof value !== "string" || value === "") {
      throw new TypeError(`a mutation needs a ${field} (got ${JSON.stringify(value)})`);
    }
  }
  if (typeof mutation.data !== "object" || mutation.data === null || Array.isArray(mutation.data)) {
    throw new TypeError(`mutation ${mutation.mid} needs a data object`);
  }
}

/** @param {{entity: string, entity_id: string}} m */
const recordKey = (m) => `${m.entity}\u0000${m.entity_id}`;

const now = () => new Date().toISOString();

const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** @param {string} mid */
const partContext = (mid) => `mutation\u0000${mid}`;

/**
 * What one mutation says, encrypted under a store's data key.
 * @param {CryptoKey} key
 * @param {string} mid
 * @param {{data: Record<string, any>, base?: Record<string, any>}} said
 */
export const encryptPart = (key, mid, said) => encryptJSON(key, partContext(mid), said);

/**
 * Encrypt what each mutation says, before the transaction that queues them opens.
 * @param {object} db
 * @param {Mutation[]} mutations
 * @returns {Promise<PreparedMutation[]>}
 */
export async function prepareMutations(db, mutations) {
  mutations.forEach(checkMutation);
  const key = keyOf(db);
  return Promise.all(mutations.map(async (mutation) => {
    const { data, base, ...fields } = mutation;
    const said = base === undefined ? { data } : { data, base };
    return {
      ...fields,
      refs: [...new Set(stringsIn(data).filter((s) => ID_PATTERN.test(s)))],
      parts: [{
        mid: mutation.mid,
        secret: await encryptPart(key, mutation.mid, said),
        escrow: await escrowFor(db, mutation.mid, said),
      }],
    };
  }));
}

/**
 * An entry as stored, made readable: its parts decrypted and folded in order.
 * @param {object} db
 * @param {StoredEntry|Entry} stored
 * @returns {Promise<Entry>}
 */
export async function openEntry(db, stored) {
  if (!("parts" in stored)) return stored; // queued before the store was encrypted
  const key = keyOf(db);
  const { parts, refs: _refs, ...fields } = stored;
  /** @type {{data: Record<string, any>, base?: Record<string, any>}[]} */
  const said = await Promise.all(parts.map((part) =>
    decryptJSON(key, partContext(part.mid), part.secret)));
  /** @type {Entry} */
  const entry = /** @type {any} */ ({ ...fields, data: Object.assign({}, ...said.map((s) => s.data)) });
  // The server compares each field with what the person saw before their first edit, so
  // the earliest base of a field wins; a create has no base but its own.
  const bases = stored.creates ? said.slice(0, 1) : said;
  if (bases.some((s) => s.base !== undefined)) {
    entry.base = Object.assign({}, ...bases.map((s) => s.base).reverse());
  }
  return entry;
}

/**
 * @param {object} db
 * @param {(StoredEntry|Entry)[]} stored
 */
const openEntries = (db, stored) => Promise.all(stored.map((e) => openEntry(db, e)));

/**
 * Enqueue inside a transaction over `outbox` and `meta` (used by quarantine.js too).
 * @param {any} tx
 * @param {PreparedMutation[]} mutations from prepareMutations
 * @param {Policies} policies
 * @returns {Promise<StoredEntry[]>}
 */
export async function enqueueIn(tx, mutations, policies) {
  const outbox = tx.objectStore("outbox");
  const meta = tx.objectStore("meta");
  let nextOrder = await readMeta(meta, "next_order", 1);

  // Open entries are always the tail of the order index (sealing takes all of them, and
  // anything enqueued later gets a higher order), so read backwards until a sealed one.
  /** @type {Map<string, StoredEntry>} */
  const lastOpen = new Map();
  let cursor = await outbox.index("order").openCursor(null, "prev");
  if (cursor) nextOrder = Math.max(nextOrder, cursor.value.order + 1);
  /** @type {StoredEntry[]} */
  const tail = [];
  while (cursor && cursor.value.state === "open") {
    tail.push(cursor.value);
    cursor = await cursor.continue();
  }
  // Only the latest open mutation of a record may absorb: merging past another
  // mutation of the same record would reorder the two.
  for (const entry of tail.reverse()) lastOpen.set(recordKey(entry), entry);

  const createdAt = now();
  /** @type {StoredEntry[]} */
  const stored = [];
  /** @type {Set<StoredEntry>} */
  const added = new Set();
  /** @type {Set<StoredEntry>} */
  const merged = new Set();
  for (const mutation of mutations) {
    const earlier = lastOpen.get(recordKey(mutation));
    // An entry queued before the store was encrypted has no parts to add to.
    if (earlier && "parts" in earlier && canMerge(earlier, mutation, policies)) {
      absorb(earlier, mutation);
      if (!added.has(earlier)) merged.add(earlier);
      stored.push(earlier);
      continue;
    }
    const { seq: _seq, state: _state, order: _order, sealed_at: _sealedAt, ...fields } =
      /** @type {any} */ (mutation);
    const type = policies[mutation.type];
    /** @type {StoredEntry} */
    const entry = {
      ...fields,
      order: nextOrder++,
      state: "open",
      created_at: createdAt,
      policy: type?.policy,
      creates: Boolean(type?.creates),
    };
    added.add(entry);
    lastOpen.set(recordKey(entry), entry);
    stored.push(entry);
  }
  // Written once each, in their final state. `add`, not `put`: a reused mid fails the batch.
  await Promise.all([
    ...[...added].map((entry) => outbox.add(entry)),
    ...[...merged].map((entry) => outbox.put(entry)),
    writeMeta(meta, { next_order: nextOrder }),
  ]);
  return stored;
}

/**
 * Queue mutations, all or none, compacting each into the previous open mutation of the
 * same record where canMerge allows.
 * @param {Store} db
 * @param {Mutation[]} mutations
 * @param {Policies} policies
 * @returns {Promise<Entry[]>} for each mutation given, in the same order, the outbox entry
 *   that now holds it: its own, or the earlier one it was merged into (a different mid)
 */
export async function enqueue(db, mutations, policies) {
  const prepared = await prepareMutations(db, mutations);
  const tx = db.transaction(["outbox", "meta"], "readwrite", STRICT);
  return openEntries(db, await runIn(tx, () => enqueueIn(tx, prepared, policies)));
}

/**
 * Every string anywhere in `value` (nested objects and arrays included).
 * @param {any} value
 * @param {string[]} [out]
 * @returns {string[]}
 */
function stringsIn(value, out = []) {
  if (typeof value === "string") out.push(value);
  else if (value !== null && typeof value === "object") {
    for (const v of Object.values(value)) stringsIn(v, out);
  }
  return out;
}

/**
 * Creation order, except that a create needed by an earlier mutation is moved up to just
 * before it (with whatever that create needs in turn). Moving the create up rather than
 * the referring mutation down keeps every other pair in the order it was made.
 *
 * A mutation needs a create when it touches the created record, names it anywhere in its
 * data (patient_id, visit_id, note_id, ...) or its patient_id, or lists its mid in deps.
 * @param {StoredEntry[]} open in order
 */
function dependencyOrder(open) {
  /** @type {Map<string, StoredEntry[]>} */
  const createsById = new Map();
  /** @type {Map<string, StoredEntry>} */
  const createsByMid = new Map();
  for (const entry of open) {
    if (!entry.creates) continue;
    createsById.set(entry.entity_id, [...(createsById.get(entry.entity_id) ?? []), entry]);
    createsByMid.set(entry.mid, entry);
  }
  /** @param {StoredEntry} m */
  const needs = (m) => {
    /** @type {Set<StoredEntry>} */
    const found = new Set();
    const ids = [m.entity_id, ...(m.patient_id ? [m.patient_id] : []), ...(m.refs ?? stringsIn(/** @type {any} */ (m).data))];
    for (const id of ids) for (const create of createsById.get(id) ?? []) found.add(create);
    for (const mid of m.deps ?? []) {
      const create = createsByMid.get(mid);
      if (create) found.add(create);
    }
    found.delete(m);
    return [...found].sort((a, b) => a.order - b.order);
  };

  /** @type {Set<StoredEntry>} entered: placed, or being placed (a cycle: creation order decides) */
  const entered = new Set();
  /** @type {StoredEntry[]} */
  const out = [];
  /** @param {StoredEntry} m */
  const place = (m) => {
    if (entered.has(m)) return;
    entered.add(m);
    for (const create of needs(m)) place(create);
    out.push(m);
  };
  open.forEach(place);
  return out;
}

/**
 * Seal every open mutation: number them contiguously from meta next_seq in dependency
 * order. Sealed mutations never change again.
 * @param {Store} db
 * @returns {Promise<number>} how many were sealed
 */
export async function seal(db) {
  const tx = db.transaction(["outbox", "meta"], "readwrite", STRICT);
  return runIn(tx, async () => {
    const outbox = tx.objectStore("outbox");
    const meta = tx.objectStore("meta");
    /** @type {StoredEntry[]} */
    const open = [];
    let cursor = await outbox.index("order").openCursor(null, "prev");
    while (cursor && cursor.value.state === "open") {
      open.push(cursor.value);
      cursor = await cursor.continue();
    }
    if (open.length === 0) return 0;
    let seq = await readMeta(meta, "next_seq", 1);
    const sealedAt = now();
    const writes = dependencyOrder(open.reverse()).map((entry) => {
      entry.seq = seq++;
      entry.state = "sealed";
      entry.sealed_at = sealedAt;
      return outbox.put(entry);
    });
    await Promise.all([...writes, writeMeta(meta, { next_seq: seq })]);
    return open.length;
  });
}

/**
 * What the server is sent for an entry: no local fields.
 * @param {Entry} entry
 * @returns {WireMutation}
 */
export function toWire(entry) {
  /** @type {any} */
  const wire = {
    mid: entry.mid, seq: entry.seq, type: entry.type, entity: entry.entity,
    entity_id: entry.entity_id, data: entry.data,
  };
  for (const field of OPTIONAL_WIRE_FIELDS) {
    const value = /** @type {any} */ (entry[field]);
    if (value !== undefined && value !== null && !(Array.isArray(value) && value.length === 0)) {
      wire[field] = value;
    }
  }
  wire.client_ts = entry.created_at;
  return wire;
}

/**
 * @param {any} outbox the `outbox` store (or a db's store accessor)
 * @returns {Promise<StoredEntry[]>} sealed entries in seq order
 */
async function sealedIn(outbox) {
  /** @type {StoredEntry[]} */
  const all = await outbox.getAll();
  return all.filter((e) => e.state === "sealed")
    .sort((a, b) => /** @type {number} */ (a.seq) - /** @type {number} */ (b.seq));
}

/**
 * The next push: sealed mutations in seq order, as the server wants them.
 * @param {Store} db
 * @param {number} [limit]
 * @returns {Promise<WireMutation[]>}
 */
export async function sealedBatch(db, limit = 100) {
  const tx = db.transaction("outbox");
  const sealed = await sealedIn(tx.store);
  return (await openEntries(db, sealed.slice(0, limit))).map(toWire);
}

/**
 * Everything not yet answered, in the order the server will see it: sealed by seq, then
 * open by order.
 * @param {Store} db
 * @returns {Promise<Entry[]>}
 */
export async function pending(db) {
  /** @type {StoredEntry[]} */
  const all = await db.getAllFromIndex("outbox", "order");
  const sealed = all.filter((e) => e.state === "sealed")
    .sort((a, b) => /** @type {number} */ (a.seq) - /** @type {number} */ (b.seq));
  return openEntries(db, [...sealed, ...all.filter((e) => e.state !== "sealed")]);
}

/**
 * Take the server's answers to a push.
 *
 * An answer counts only if its mid and seq both match a sealed entry: after a renumbering
 * an answer to the old numbering says nothing about where the mutation stands now.
 * @param {Store} db
 * @param {PushResult[]} results
 * @param {string|null} [requestId] the push's correlation id, kept with rejections
 * @returns {Promise<{settled: number, rejected: Quarantined[], conflicts: PushResult[]}>}
 *   `conflicts` are the conflict answers as the server gave them
 */
export async function settle(db, results, requestId = null) {
  const key = keyOf(db);
  // Encrypted before the transaction opens: the records answered (the newest per row) and
  // the reasons for refusals, which may quote what was refused.
  /** @type {Map<string, import("./rows.js").Item>} */
  const newest = new Map();
  for (const result of results) {
    if (result?.record == null || result.version == null || !result.entity || !result.entity_id) continue;
    const rowKey = `${result.entity}\u0000${result.entity_id}`;
    const other = newest.get(rowKey);
    if (!other || /** @type {number} */ (other.version) < result.version) {
      newest.set(rowKey, { entity: result.entity, id: result.entity_id, version: result.version, record: result.record });
    }
  }
  const rowKeys = [...newest.keys()];
  const prepared = await prepareRows(db, [...newest.values()]);
  /** @type {Map<string, import("./rows.js").StoredRow>} */
  const preparedRows = new Map(rowKeys.map((k, i) => [k, prepared[i]]));
  /** @type {Map<string, Uint8Array|null>} */
  const reasons = new Map(await Promise.all(results
    .filter((r) => r?.status === "rejected" && typeof r.mid === "string")
    .map(async (r) => /** @type {[string, Uint8Array|null]} */ ([r.mid,
      r.error == null ? null : await encryptRefusal(key, r.mid, r.error)]))));

  const tx = db.transaction(["outbox", "sent", "quarantine", "meta", "rows"], "readwrite", STRICT);
  return runIn(tx, async () => {
    const outbox = tx.objectStore("outbox");
    const sent = tx.objectStore("sent");
    const quarantine = tx.objectStore("quarantine");
    const meta = tx.objectStore("meta");
    const rows = tx.objectStore("rows");
    const ackedBefore = await readMeta(meta, "acked_seq", 0);
    let acked = ackedBefore;
    let settled = 0;
    /** @type {StoredQuarantined[]} */
    const rejected = [];
    /** @type {PushResult[]} */
    const conflicts = [];
    /** @type {Set<string>} rows answered for mutations that count */
    const answeredRows = new Set();
    /** @type {Promise<any>[]} */
    const writes = [];
    const answeredAt = now();

    /** @type {(StoredEntry|undefined)[]} */
    const entries = await Promise.all(results.map((result) =>
      typeof result?.mid === "string" ? outbox.get(result.mid) : undefined));
    /** @type {Set<string>} */
    const seen = new Set();
    results.forEach((result, i) => {
      const entry = entries[i];
      if (!entry || entry.state !== "sealed" || entry.seq !== result.seq) return;
      if (seen.has(entry.mid)) return; // the same answer twice in one reply
      seen.add(entry.mid);
      settled += 1;
      acked = Math.max(acked, /** @type {number} */ (entry.seq));
      writes.push(outbox.delete(entry.mid));
      if (result.status === "rejected") {
        /** @type {StoredQuarantined} */
        const held = {
          mid: entry.mid,
          mutation: entry,
          error: reasons.get(entry.mid) ?? null,
          request_id: requestId ?? null,
          quarantined_at: answeredAt,
        };
        writes.push(quarantine.put(held));
        rejected.push(held);
        return;
      }
      writes.push(sent.put({ ...entry, status: result.status, answered_at: answeredAt }));
      if (result.status === "conflict") conflicts.push(result);
      if (result.record != null && result.version != null) {
        answeredRows.add(`${result.entity}\u0000${result.entity_id}`);
      }
    });
    // One write per row: two answers for one record must not race each other's version check.
    for (const rowKey of answeredRows) {
      const row = preparedRows.get(rowKey);
      if (row) writes.push(putRowIn(rows, row));
    }
    await Promise.all(writes);

    const excess = (await sent.count()) - SENT_KEPT;
    if (excess > 0) {
      let cursor = await sent.index("seq").openCursor();
      for (let i = 0; i < excess && cursor; i++) {
        await cursor.delete();
        cursor = await cursor.continue();
      }
    }
    if (acked !== ackedBefore) await writeMeta(meta, { acked_seq: acked });
    return { settled, rejected, conflicts, answeredRows };
  }).then(async ({ settled, rejected, conflicts, answeredRows }) => {
    rowsChanged(db, { stored: [...answeredRows].map((rowKey) => newest.get(rowKey)).filter((item) => item !== undefined) });
    return { settled, conflicts, rejected: await Promise.all(rejected.map((held) => openQuarantined(db, held))) };
  });
}

/** @param {string} mid */
const errorContext = (mid) => `refusal\u0000${mid}`;

/**
 * Why the server refused a mutation, encrypted under a store's data key (it may quote what
 * was refused).
 * @param {CryptoKey} key
 * @param {string} mid
 * @param {any} error
 */
export const encryptRefusal = (key, mid, error) => encryptJSON(key, errorContext(mid), error);

/**
 * A quarantined mutation as stored, made readable.
 * @param {object} db
 * @param {StoredQuarantined|Quarantined} held
 * @returns {Promise<Quarantined>}
 */
export async function openQuarantined(db, held) {
  const error = held.error instanceof Uint8Array || held.error instanceof ArrayBuffer
    ? await decryptJSON(keyOf(db), errorContext(held.mid), held.error)
    : held.error;
  return { ...held, mutation: await openEntry(db, held.mutation), error };
}

/**
 * The server expects `expectedSeq`, earlier than the outbox's head: it was restored from a
 * backup (or lost a gap). Mutations it acknowledged since then come back from `sent` ahead
 * of the queue (the server answers any it still knows as duplicates), and everything
 * sealed is numbered on contiguously from `expectedSeq`.
 * @param {Store} db
 * @param {number} expectedSeq
 * @returns {Promise<number>} how many sealed mutations now wait, renumbered (0: no change)
 */
export async function renumberFrom(db, expectedSeq) {
  if (!Number.isInteger(expectedSeq) || expectedSeq < 1) {
    throw new RangeError(`expected seq must be a positive integer, not ${expectedSeq}`);
  }
  const tx = db.transaction(["outbox", "sent", "meta"], "readwrite", STRICT);
  return runIn(tx, async () => {
    const outbox = tx.objectStore("outbox");
    const sent = tx.objectStore("sent");
    const meta = tx.objectStore("meta");
    const sealed = await sealedIn(outbox);
    const head = sealed.length ? sealed[0].seq : await readMeta(meta, "next_seq", 1);
    if (expectedSeq >= /** @type {number} */ (head)) return 0;

    const resend = await sent.index("seq").getAll(IDBKeyRange.lowerBound(expectedSeq));
    /** @type {StoredEntry[]} */
    const queue = [];
    for (const answered of resend) {
      await sent.delete(answered.mid);
      const { status: _status, answered_at: _answeredAt, ...entry } = answered;
      queue.push(entry);
    }
    queue.push(...sealed);
    let seq = expectedSeq;
    for (const entry of queue) {
      entry.seq = seq++;
      entry.state = "sealed";
      await outbox.put(entry);
    }
    await writeMeta(meta, { next_seq: seq, acked_seq: expectedSeq - 1 });
    return queue.length;
  });
}

/**
 * Queue health for the sync badge and device telemetry.
 * @param {Store} db
 * @returns {Promise<{pending: number, oldest_pending_at: string|null, quarantined: number}>}
 */
export async function stats(db) {
  const tx = db.transaction(["outbox", "quarantine"]);
  const outbox = tx.objectStore("outbox");
  // The lowest order is the mutation queued first, whatever the clock said since.
  const [count, first, quarantined] = await Promise.all([
    outbox.count(),
    outbox.index("order").openCursor(),
    tx.objectStore("quarantine").count(),
  ]);
  await tx.done;
  return {
    pending: count,
    oldest_pending_at: first ? first.value.created_at : null,
    quarantined,
  };
}
