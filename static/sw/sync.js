// @ts-check
// Flush and pull (DESIGN.md §4, §5): one flusher at a time across every tab and the worker
// (Web Locks), sealed mutations pushed in seq order, answers settled in one transaction each,
// then the device's subset pulled from its cursor. Network faults and 5xx back off with jitter;
// 401 pauses until the person signs in again; nothing queued is ever dropped.

import { getMeta, getSecretMeta, setMeta, setSecretMeta } from "../idb/meta.js";
import { applyChanges, prepareChanges } from "../idb/rows.js";
import { seal, sealedBatch, settle, renumberFrom, stats } from "../idb/outbox.js";
import { withDeadline } from "./deadline.js";

const PROTOCOL = 1;
const LOCK = "clinic-record-flush";
const PUSH_BATCH = 100;
const PULL_LIMIT = 500;
/** The smallest pull page a slow link is asked to take. */
const PULL_LIMIT_LEAST = 50;
/** Pull answers a device holds at most, arrived and not yet stored (the one being stored included). */
const PAGES_IN_HAND = 3;
const TELEMETRY_FRESH_MS = 10_000;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** A request not answered by then is given up and sent again later. A link that drops
 * mid-request can leave it unanswered for many minutes, holding every later sync behind it. */
const REQUEST_TIMEOUT_MS = 60_000;

export class SignInNeeded extends Error {}
/** A pull cut short for a write queued meanwhile: its cycle starts over, push first. */
class Preempted extends Error {}
export class Unreachable extends Error {
  /** @param {string} message @param {number|null} retryAfterMs */
  constructor(message, retryAfterMs = null) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}
/** No answer within the request's deadline: on a slow link, the next try asks for less. */
class TimedOut extends Unreachable {}

/**
 * @typedef {{
 *   db: () => Promise<any>,
 *   session: () => Promise<any>,
 *   refreshSession: () => Promise<any>,
 *   announce: (status: any) => void,
 *   afterSync?: (session: any) => Promise<void>,
 *   version: string,
 * }} SyncDeps
 */

const CONFLICTS_KEPT = 50;

/**
 * A change that met someone else's is kept on the server's review list; the device keeps a
 * short list too, with both values of each field, so the person who made it sees what happened.
 */
async function rememberConflicts(db, batch, answers) {
  if (!answers.length) return;
  const sent = new Map(batch.map((m) => [m.mid, m]));
  const fresh = answers.filter((a) => a.conflict && sent.has(a.mid)).map((a) => {
    const mine = sent.get(a.mid);
    return {
      mid: a.mid, type: mine.type, entity: a.entity, entity_id: a.entity_id, at: new Date().toISOString(),
      fields: (a.conflict.fields || []).map((field) => ({
        field, yours: mine.data[field] ?? null, kept: (a.conflict.server || {})[field] ?? null,
      })),
    };
  });
  const held = (await getSecretMeta(db, "conflicts")) || [];
  await setSecretMeta(db, { conflicts: [...fresh, ...held].slice(0, CONFLICTS_KEPT) });
}

/** Half of `n`, but not below `least`, and never more than `n` (a page already smaller). */
function halved(n, least) {
  return Math.max(Math.min(least, n), Math.floor(n / 2));
}

/** `body` posted as JSON, and the answer read: null when none came; `json` null when the
 * answer held none (a 204, a proxy's error page judged by its status, or one cut off). */
async function exchange(session, path, body, signal) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: {
        "Content-Type": "application/json", Accept: "application/json",
        "X-CSRFToken": session.shell.csrf_token, "X-Client-Id": body.client_id,
      },
      body: JSON.stringify(body),
      signal,
    });
  } catch {
    return null;
  }
  let json = null;
  try {
    json = await response.json();
  } catch (error) {
    // The link lost while the answer was on its way fails the read as a failed fetch does
    // (a TypeError): that is no answer at all, whatever its status said. A whole answer that
    // is not JSON (a 204, a proxy's error page) fails to parse (a SyntaxError): it stands.
    if (error instanceof TypeError) return null;
  }
  return { response, json };
}

export class Syncer {
  /** @param {SyncDeps} deps */
  constructor(deps) {
    this.deps = deps;
    this.forget();
    this.failures = 0;
    this.timer = null;
    this.again = false;
    this.pushBatch = PUSH_BATCH;
    /** @type {number|null} records per pull page while pages fail to arrive in time */
    this.pullLimit = null;
    /** @type {AbortController|null} the pull under way, which a queued write may cut short */
    this.pulling = null;
    this.owesChanged = false;
  }

  /** A new person on the device: nothing of the last one's state carries over. */
  forget() {
    this.status = {
      state: "synced", pending: 0, quarantined: 0, needs_sign_in: false, offline: false,
      blocked: false, last_synced_at: null, last_error: null, initial: null, storage: null,
    };
  }

  /** Run a flush and pull now, or right after the one in progress. */
  async run(reason = "") {
    const locks = /** @type {any} */ (navigator).locks;
    const body = async (lock) => {
      if (lock === null) {
        this.again = true; // someone else is flushing; look again when they are done
        // A person's write does not wait for a pull's answer: the pull is made again after
        // the push, which it would be anyway, since the write comes back as a change.
        if (reason === "write" && this.pulling) this.pulling.abort();
        return;
      }
      do {
        this.again = false;
        await this.cycle(reason);
      } while (this.again);
    };
    if (locks) await locks.request(LOCK, { ifAvailable: true }, body);
    else await body(true);
    // A kick that arrived after the last cycle began but before the lock was let go.
    if (this.again && !this.rerunning) {
      this.rerunning = true;
      try {
        await this.run("again");
      } finally {
        this.rerunning = false;
      }
    }
  }

  async cycle(reason) {
    const session = await this.deps.session();
    if (!session) return;
    try {
      await this.push(session);
      this.pulling = new AbortController();
      let changed;
      try {
        changed = await this.pull(session);
      } finally {
        this.pulling = null;
      }
      // Pages redraw from the stored rows at once, with the status they already show: what
      // follows does not change what they show. A write queued meanwhile goes before it too.
      if (changed || this.owesChanged) this.deps.announce({ ...this.status, changed: true });
      this.owesChanged = false;
      if (this.deps.afterSync && !this.again) await this.deps.afterSync(session);
      this.failures = 0;
      this.pushBatch = PUSH_BATCH;
      this.pullLimit = null;
      this.status.offline = false;
      this.status.needs_sign_in = false;
      this.status.blocked = false;
      this.status.last_error = null;
      this.status.last_synced_at = new Date().toISOString();
      await this.refresh({ changed: false });
    } catch (error) {
      if (error instanceof Preempted) {
        // Pages of the pull may have been stored already; the next cycle tells the pages.
        this.owesChanged = true;
        return;
      }
      if (error instanceof SignInNeeded) {
        this.status.needs_sign_in = true;
        this.status.last_error = "Your session has ended. Sign in again to send your changes; they are kept on this device.";
      } else if (error instanceof Unreachable) {
        this.status.offline = true;
        this.status.last_error = error.message;
        this.retryLater(error.retryAfterMs);
      } else {
        // The server refused the request itself (not one change): a person must look.
        this.status.blocked = true;
        this.status.last_error = `Sync stopped: ${error && error.message ? error.message : error}`;
        this.retryLater(null);
      }
      await this.refresh({ changed: false });
    }
  }

  retryLater(retryAfterMs) {
    this.failures += 1;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.failures - 1));
    // Full jitter: devices that lost the link together do not all come back in one instant.
    const delay = Math.max(retryAfterMs || 0, Math.random() * ceiling);
    this.schedule(delay);
  }

  schedule(delayMs) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.run("timer").catch((error) => console.error("sync failed", error));
    }, delayMs);
  }

  /** Recount what waits and tell every open page. */
  async refresh({ changed }) {
    const db = await this.deps.db();
    if (!db) return;
    const counts = await stats(db);
    this.status.pending = counts.pending;
    this.status.quarantined = counts.quarantined;
    this.status.oldest_pending_at = counts.oldest_pending_at;
    this.status.initial = (await getMeta(db, "initial_sync")) || null;
    this.status.state = this.status.needs_sign_in || this.status.blocked || counts.quarantined ? "attention"
      : this.status.offline ? "offline" : counts.pending ? "pending" : "synced";
    this.deps.announce({ ...this.status, changed });
  }

  async telemetry(db) {
    const counts = await stats(db);
    const telemetry = {
      queue_depth: counts.pending, oldest_pending_at: counts.oldest_pending_at,
      quarantine_count: counts.quarantined, worker_version: this.deps.version,
      app_version: this.deps.version,
    };
    try {
      const estimate = await navigator.storage.estimate();
      telemetry.storage_used = estimate.usage;
      telemetry.storage_quota = estimate.quota;
      if (navigator.storage.persisted) telemetry.storage_persisted = await navigator.storage.persisted();
    } catch { /* not every browser tells */ }
    this.status.storage = {
      used: telemetry.storage_used ?? null, quota: telemetry.storage_quota ?? null,
      persisted: telemetry.storage_persisted ?? null,
    };
    return telemetry;
  }

  async push(session) {
    const db = await this.deps.db();
    // Known offline: leave the queue unsealed, so edits of one record made meanwhile can still
    // merge into one change (DESIGN.md §4, outbox compaction).
    if (navigator.onLine === false) throw new Unreachable("No connection to the server. Changes are kept on this device and sent when it is back.");
    for (;;) {
      await seal(db);
      const batch = await sealedBatch(db, this.pushBatch);
      if (!batch.length) return;
      const clientId = await getMeta(db, "client_id");
      let reply;
      try {
        reply = await this.post(session, "/sync/v1/push", {
          protocol: PROTOCOL, client_id: clientId, mutations: batch, telemetry: await this.telemetry(db),
        });
      } catch (error) {
        // Too much for this link within the deadline (signatures weigh): send half next time.
        if (error instanceof TimedOut && batch.length > 1) this.pushBatch = halved(batch.length, 1);
        throw error;
      }
      if ((reply.status === 200 || reply.status === 409) && !Array.isArray(reply.body.results)) {
        // A 200 that is not the server's answer (a captive portal's page, a proxy's).
        throw new Unreachable("The network answered, but not the server. Changes are kept and sent again shortly.");
      }
      if (reply.status === 200 || reply.status === 409) {
        const settled = await settle(db, reply.body.results || [], reply.requestId);
        await rememberConflicts(db, batch, settled.conflicts || []);
        if (reply.status === 409) await renumberFrom(db, reply.body.expected_seq);
        continue;
      }
      const namesAMutation = (reply.body.problems || []).some((p) => Number.isInteger(p.index));
      if (reply.status === 413 || (reply.status === 400 && namesAMutation)) {
        // The server refused the whole batch because of what one change holds. Narrow it down
        // until that one stands alone; it waits in quarantine for a person, the rest go on.
        if (batch.length > 1) {
          this.pushBatch = Math.max(1, Math.floor(batch.length / 2));
          continue;
        }
        await settle(db, [{
          mid: batch[0].mid, seq: batch[0].seq, status: "rejected",
          error: { code: reply.body.error || "refused", message: reply.body.message || "The server refused this change.", problems: reply.body.problems || [] },
        }], reply.requestId);
        this.pushBatch = PUSH_BATCH;
        continue;
      }
      this.raiseFor(reply);
    }
  }

  /**
   * Pull pages until the server has no more. The next page is asked for as soon as one
   * arrives, with that page's cursor, and travels while earlier pages are stored (up to
   * PAGES_IN_HAND answers wait in memory; one request is in flight at a time): the cursor
   * kept on the device still moves only with the rows it covers, and a page that fails to
   * be stored drops the answers asked after it, which the next cycle asks again from the
   * stored cursor, as after an answer lost on the way.
   * @returns {Promise<boolean>} whether any record on the device changed
   */
  async pull(session) {
    const db = await this.deps.db();
    const [clientId, cursor] = await Promise.all([getMeta(db, "client_id"), getMeta(db, "cursor", null)]);
    const limit = this.pullLimit || session.pull_page || PULL_LIMIT;
    let telemetry = null;
    let telemetryAt = 0;
    let inHand = 0;
    /** @type {(() => void)|null} the ask held back while PAGES_IN_HAND answers wait */
    let parked = null;
    let over = false;
    /**
     * @param {string|null} from
     * @returns {Promise<{reply: any, prepared?: Promise<any>, next: Promise<any>|null}>}
     *   `next`: the answer after this one, already asked for or asked once there is room
     */
    const ask = (from) => {
      const page = (async () => {
        // Counting the queue and asking the storage estimate at every page would hold up
        // each request; what they say moves slowly.
        if (!telemetry || Date.now() - telemetryAt > TELEMETRY_FRESH_MS) {
          telemetry = await this.telemetry(db);
          telemetryAt = Date.now();
        }
        let reply;
        try {
          reply = await this.post(session, "/sync/v1/pull", { protocol: PROTOCOL, client_id: clientId, cursor: from, limit, telemetry });
        } catch (error) {
          if (error instanceof TimedOut) this.pullLimit = halved(limit, PULL_LIMIT_LEAST);
          throw error;
        }
        inHand += 1;
        const ok = reply.status === 200 && Array.isArray(reply.body?.changes) && !over;
        // Encrypted as soon as it arrives, while the pages before it are still being written.
        const prepared = ok ? prepareChanges(db, reply.body.changes) : undefined;
        prepared?.catch(() => {}); // applyChanges encrypts again if this failed
        /** @type {Promise<any>|null} */
        let next = null;
        if (ok && reply.body.has_more) {
          const more = () => ask(reply.body.cursor);
          next = inHand < PAGES_IN_HAND ? more() : new Promise((resolve) => { parked = () => resolve(more()); });
          next.catch(() => {}); // awaited below; unless storing an earlier page fails first
        }
        return { reply, prepared, next };
      })();
      page.catch(() => {});
      return page;
    };
    try {
      return await this.storePages(db, ask(cursor), () => {
        inHand -= 1;
        const go = parked;
        parked = null;
        go?.();
      });
    } finally {
      // Answers still on their way are dropped, and no more are asked for.
      over = true;
    }
  }

  /**
   * Store the pull's pages in order.
   * @param {any} db
   * @param {Promise<{reply: any, prepared?: Promise<any>, next: Promise<any>|null}>} asked the first
   * @param {() => void} stored called once each page is stored
   * @returns {Promise<boolean>} whether any record on the device changed
   */
  async storePages(db, asked, stored) {
    let changed = false;
    for (;;) {
      const { reply, prepared, next } = await asked;
      if (reply.status !== 200) this.raiseFor(reply);
      const body = reply.body;
      const held = await getMeta(db, "initial_sync");
      // After a reset the device holds only part of its subset until the refill ends, so the
      // worker sends pages to the server meanwhile, as on the first sign-in.
      const initial = body.reset ? { done: false, received: 0, estimate: held?.estimate || 0, started_at: new Date().toISOString() } : held;
      const progress = initial && !initial.done ? {
        ...initial, received: (initial.received || 0) + body.changes.length, done: !body.has_more,
      } : null;
      // Rows, cursor and progress in one transaction: the cursor never runs ahead of the rows.
      const count = await applyChanges(db, body.changes, {
        reset: body.reset,
        prepared,
        meta: {
          cursor: body.cursor, server_time: body.server_time,
          clock_offset_ms: Number.isFinite(Date.parse(body.server_time)) ? Date.parse(body.server_time) - Date.now() : 0,
          ...(progress ? { initial_sync: progress } : {}),
        },
      });
      changed = changed || count > 0 || body.reset;
      stored();
      // A server restored from a backup lost some of what this device sent: send it again.
      if (body.last_seq < await getMeta(db, "acked_seq", 0)) await renumberFrom(db, body.last_seq + 1);
      if (progress) await this.refresh({ changed: false });
      if (!next) return changed;
      asked = next;
    }
  }

  async post(session, path, body, retried = false) {
    const preempt = path === "/sync/v1/pull" && this.pulling ? this.pulling.signal : undefined;
    const timeoutMs = session.request_timeout_ms || REQUEST_TIMEOUT_MS;
    const deadline = withDeadline(timeoutMs, preempt);
    const answer = await exchange(session, path, body, deadline.signal).finally(() => deadline.clear());
    if (preempt && preempt.aborted) throw new Preempted();
    // An answer cut off when the time ran out is no answer, whatever its status said.
    if (deadline.expired && (!answer || answer.json === null)) {
      throw new TimedOut(`The server did not answer within ${Math.round(timeoutMs / 1000)} s. ` +
        "Changes are kept on this device and sent again shortly.");
    }
    if (!answer) throw new Unreachable("No connection to the server. Changes are kept on this device and sent when it is back.");
    const { response } = answer;
    const json = answer.json || {};
    const reply = { status: response.status, body: json, requestId: response.headers.get("X-Request-ID"), headers: response.headers };
    if (reply.status === 403 && json.error === "csrf_failed" && !retried) {
      const fresh = await this.deps.refreshSession();
      if (fresh) return this.post(fresh, path, body, true);
    }
    return reply;
  }

  raiseFor(reply) {
    if (reply.status === 401) throw new SignInNeeded(reply.body.message || "Sign in again.");
    if (reply.status >= 500 || reply.status === 429 || reply.status === 408) {
      const after = Number(reply.headers.get("Retry-After"));
      throw new Unreachable(`The server could not take the changes just now (${reply.status}); they are kept and sent again shortly.`,
        Number.isFinite(after) && after > 0 ? after * 1000 : null);
    }
    throw new Error(reply.body.message || `The server answered ${reply.status}.`);
  }
}
