// @ts-check
// The service worker (a module worker; DESIGN.md §4). It caches the app shell under a version
// stamped into this file by the server, renders the pages of the device's patients from
// IndexedDB with the same templates as the server, turns their form posts into queued
// mutations, and flushes and pulls in the background. Everything else goes to the network.

import "/static/vendor/nunjucks.min.js";
import { openDB } from "/static/idb/idb.js";
import { deleteStore, openStore, storeName } from "/static/idb/db.js";
import { getMeta, getSecretMeta, secretMetaIn, setMeta, setSecretMeta } from "/static/idb/meta.js";
import { recordsOfEntity, watchRows } from "/static/idb/rows.js";
import { enqueue, pending, stats } from "/static/idb/outbox.js";
import { discard, getQuarantined, listQuarantine, resend } from "/static/idb/quarantine.js";
import { createEnvironment, render as renderTemplate } from "/static/sw/templates.js";
import { recordsFrom, withPending } from "/static/sw/replay.js";
import { match } from "/static/sw/pages.js";
import { Syncer } from "/static/sw/sync.js";
import { newId } from "/static/sw/ids.js";
import { localPath } from "/static/sw/forms.js";
import { countFailure, createSlots, passkeysOf, recordOnline, resetFailures, slotsOf, tryUnwrap, tryUnwrapWithPasskey, unlockRefusal } from "/static/sw/keys.js";
import { attachKey, detachKey, newDataKey } from "/static/idb/vault.js";
import { PIN_PATTERN, checkPin, countShortLockMiss, idleState, markActive, markCold, setPin } from "/static/sw/idle.js";
import { attachEscrow, base64url } from "/static/idb/escrow.js";
import { escrowedParts, rekey } from "/static/idb/rekey.js";
import { validate, errorsOf } from "/static/sw/validate.js";
import { dropPatientIndex, patientRecords } from "/static/sw/patient_index.js";
import { dropPatientRows, rowsOfPatient } from "/static/sw/patient_rows.js";
import { Timing } from "/static/sw/timing.js";
import { withDeadline } from "/static/sw/deadline.js";

const VERSION = "__SHELL_VERSION__";
/** @type {string[]} */
const ASSETS = __SHELL_ASSETS__;
const CACHE = `shell-${VERSION}`;
const TEMPLATES_URL = ASSETS.find((a) => a.startsWith("/app/templates.json"));

const sw = /** @type {any} */ (self);

// ---------------------------------------------------------------------------------------------
// Lifecycle

sw.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(ASSETS.map((url) => new Request(url, { cache: "reload" })));
    // A new version takes over at once: pages are rendered by the worker, so the next page
    // shown is already the new one, and the outbox in IndexedDB is shared by both versions.
    await sw.skipWaiting();
  })());
});

sw.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await sw.clients.claim();
    // A form the server handled just before this worker took over has left its message with
    // the server; the first page this worker renders asks for it.
    runtime.serverMessages = true;
    kick("start");
  })());
});

// ---------------------------------------------------------------------------------------------
// Who is signed in on this device, and their store

const runtime = {
  /** @type {any} */ session: null,
  /** @type {any} */ db: null,
  /** @type {any} */ env: null,
  /** @type {{category: string, text: string}[]} */ flashes: [],
  serverMessages: false,
  /** @type {Map<string, CryptoKey>} data keys of people unlocked on this device; memory only */
  keys: new Map(),
  /** @type {{username: string, password: string, at: number}|null} the password of a sign-in the server is checking */
  pendingSecret: null,
  /** @type {Map<string, {credentialId: string, prf: Uint8Array, at: number}>} a passkey's PRF
   * output, kept until the password next opens the key and it can be wrapped under it too */
  pendingPasskeys: new Map(),
};

/** How long a password typed at sign-in waits for the second step to finish. */
const PENDING_SECRET_MS = 10 * 60_000;
/** How long the worker waits for open pages to hand back the key after a restart. Each page
 * answers, with the key or without: the wait ends as soon as one hands it or all have said
 * they have none, so this is only for a page too busy to answer (a slow tablet under load
 * took more than 400 ms, and the device locked). */
const KEY_HANDOFF_MS = 3000;

/** @type {Promise<any>|null} */
let deviceConnection = null;
const deviceDb = () => {
  deviceConnection ??= openDB("clinic-record-device", 2, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) db.createObjectStore("device");
      if (oldVersion < 2) db.createObjectStore("keyslots");
    },
  });
  return deviceConnection;
};

async function currentUserId() {
  return (await deviceDb()).get("device", "current_user_id");
}

async function setCurrentUser(userId) {
  const db = await deviceDb();
  if (userId) await db.put("device", userId, "current_user_id");
  else await db.delete("device", "current_user_id");
}

/** Open a person's store; if another context upgrades or deletes it, the next use reopens.
 * Without their key (locked) it opens too, for what is kept in the clear. */
async function open(userId) {
  const db = await openStore(userId, await keyFor(userId));
  // The key may have arrived (an unlock, a page's handoff) while the store was opening.
  const arrived = runtime.keys.get(userId);
  if (arrived) attachKey(db, arrived);
  const session = await getMeta(db, "session");
  if (session) attachEscrow(db, userId, session.escrow_key);
  db.addEventListener("versionchange", () => {
    if (runtime.db === db) {
      runtime.db = null;
      runtime.session = null;
    }
  });
  return db;
}

/**
 * The person's data key: held in memory, or handed back by an open page after this worker
 * was stopped and started again (DESIGN.md §6). null: the device is locked for them.
 * @param {string} userId
 */
async function keyFor(userId) {
  const held = runtime.keys.get(userId);
  if (held) return held;
  // No slot, no key anywhere: a device not set up for them need not wait on its pages.
  if (!(await hasSlot(userId))) return null;
  const clients = await sw.clients.matchAll({ includeUncontrolled: true, type: "window" });
  if (!clients.length) return null;
  const handed = await new Promise((resolve) => {
    let unanswered = clients.length;
    /** @param {string} id @param {CryptoKey|null} key null: a page without it */
    const waiter = (id, key) => {
      if (id !== userId) return false;
      unanswered -= 1;
      if (!key && unanswered > 0) return false;
      clearTimeout(timer);
      resolve(key);
      return true;
    };
    const timer = setTimeout(() => {
      keyWaiters = keyWaiters.filter((other) => other !== waiter);
      resolve(null);
    }, KEY_HANDOFF_MS);
    keyWaiters.push(waiter);
    for (const client of clients) client.postMessage({ type: "key-wanted", user_id: userId });
  });
  if (!handed) return null;
  // The pages kept the key while this worker was stopped; past the long idle time it goes.
  if (idleState(await slotsOf(await deviceDb(), userId), Date.now()) === "cold") {
    await dropKey(userId);
    return null;
  }
  holdKey(userId, handed);
  return handed;
}

/**
 * Keep `key` for `userId` and give it to their store if it is open: a store opened while
 * they were locked must not stay keyless once they unlock.
 * @param {string} userId
 * @param {CryptoKey} key
 */
function holdKey(userId, key) {
  runtime.keys.set(userId, key);
  if (runtime.db && runtime.db.name === storeName(userId)) attachKey(runtime.db, key);
}

/** @type {((userId: string, key: CryptoKey|null) => boolean)[]} */
let keyWaiters = [];

/** Tell the pages the key (they keep it for a restarted worker), or to drop it. */
async function shareKey(userId) {
  const key = runtime.keys.get(userId);
  await broadcast(key ? { type: "data-key", user_id: userId, key } : { type: "lock", user_id: userId });
}

/**
 * Lock this person's records: the key leaves memory here and in every open page, and the
 * next unlock is a cold one (password).
 * @param {string} userId
 */
async function dropKey(userId) {
  await markCold(await deviceDb(), userId);
  await lockKey(userId);
}

/**
 * The key of `userId` leaves this worker, their open store and every page.
 * @param {string} userId
 */
async function lockKey(userId) {
  // Reads shown so far are audited: written while the key can still encrypt them.
  await writeReads().catch((error) => console.error("reads not recorded", error));
  runtime.keys.delete(userId);
  dropPatientIndex();
  dropPatientRows();
  if (runtime.db && runtime.db.name === storeName(userId)) detachKey(runtime.db);
  await shareKey(userId);
}

/**
 * The idle rules, applied to the person signed in here (idle.js): past the long idle time
 * their key is dropped.
 * @returns {Promise<{state: "none"|import("/static/sw/idle.js").IdleState, userId?: string, slots?: any}>}
 *   "none": no key held, so nothing for the idle lock to do
 */
async function enforceIdle() {
  const session = await loadSession();
  if (!session || !runtime.keys.get(session.user_id)) return { state: "none" };
  const userId = session.user_id;
  const slots = await slotsOf(await deviceDb(), userId);
  const state = idleState(slots, Date.now());
  if (state === "cold") await dropKey(userId);
  return { state, userId, slots };
}


async function loadSession() {
  if (runtime.session && runtime.db) return runtime.session;
  const userId = await currentUserId();
  if (!userId) return null;
  runtime.db = await open(userId);
  runtime.session = (await getMeta(runtime.db, "session")) || null;
  return runtime.session;
}

async function storeOf() {
  await loadSession();
  return runtime.db;
}

/** Nobody is signed in on this device any more: their store (and queue) stays, unopened. */
async function forgetUser() {
  const gone = runtime.session?.user_id;
  // Signing out locks: the next person, or a thief, needs the secret to read anything.
  if (gone) await lockKey(gone);
  runtime.pendingPasskeys.clear();
  runtime.session = null;
  runtime.db = null;
  runtime.flashes = [];
  syncer.forget();
  await setCurrentUser(null);
}

/** @type {Promise<any>|null} */
let refreshing = null;
/** How long the worker waits for the server to say who is signed in, before it has been told. */
const SESSION_ANSWER_MS = 60_000;

/** Ask the server who is signed in; switches this device's store when the person changed.
 * One question at a time: two pages saying hello at once must not make two device ids. */
function refreshSession() {
  refreshing ??= askWhoIsSignedIn().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function askWhoIsSignedIn() {
  // A sync waiting for this answer holds the flush lock: a lost answer must not hold it long.
  const deadline = withDeadline(runtime.session?.request_timeout_ms || SESSION_ANSWER_MS);
  const session = await sessionFromServer(deadline.signal).finally(() => deadline.clear());
  if (!session) return null;
  if (!session.offline) {
    // The console's roles keep no patient data on devices; nor does anyone see the last
    // clinical user's pages after them.
    await forgetUser();
    return null;
  }
  if (runtime.session && runtime.session.user_id !== session.user_id) {
    await lockKey(runtime.session.user_id);
    runtime.pendingPasskeys.clear();
    syncer.forget();
  }
  await unlockFromSignIn(session);
  return takeUp(session);
}

/** The server's /app/session.json, or null: no answer, an error, or nobody signed in. */
async function sessionFromServer(signal) {
  let response;
  try {
    response = await fetch("/app/session.json", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" }, signal });
  } catch {
    return null;
  }
  if (response.status === 401) {
    await forgetUser();
    return null;
  }
  if (!response.ok || !(response.headers.get("Content-Type") || "").includes("json")) return null;
  return response.json().catch(() => null); // cut off: nobody is known to be signed in yet
}

/**
 * Make `session` this device's current one: its person's store open (with their key when
 * unlocked) and its starting points written, for a store just made or made again.
 */
async function takeUp(session) {
  if (!runtime.session || runtime.session.user_id !== session.user_id || !runtime.db) {
    await setCurrentUser(session.user_id);
    runtime.db = await open(session.user_id);
    runtime.flashes = [];
  } else if (runtime.keys.get(session.user_id)) {
    attachKey(runtime.db, /** @type {CryptoKey} */ (runtime.keys.get(session.user_id)));
  }
  await recordOnline(await deviceDb(), session.user_id, session);
  const db = runtime.db;
  const held = await getMeta(db, "session");
  const fresh = {};
  if (!(await getMeta(db, "client_id"))) fresh.client_id = newId();
  if ((await getMeta(db, "next_seq")) === undefined) Object.assign(fresh, { next_seq: 1, acked_seq: 0 });
  const initial = await getMeta(db, "initial_sync");
  if (!initial || (held && held.clinic_id !== session.clinic_id)) {
    fresh.initial_sync = {
      done: false, received: 0, estimate: session.subset_estimate || 0, started_at: new Date().toISOString(),
    };
  }
  await setMeta(db, { ...fresh, session });
  if (fresh.initial_sync) initialSyncDone = new WeakSet();
  attachEscrow(db, session.user_id, session.escrow_key);
  runtime.session = session;
  return session;
}

// ---------------------------------------------------------------------------------------------
// Locking and unlocking this person's records on the device

/**
 * After a sign-in the server accepted, open the person's key slot with the password they
 * typed, or make their first (unlockWithVerifiedSecret).
 */
async function unlockFromSignIn(session) {
  const userId = session.user_id;
  const pendingSecret = runtime.pendingSecret;
  runtime.pendingSecret = null;
  if (runtime.keys.get(userId)) return;
  const signedIn = String(session.shell?.user?.username || "").toLowerCase();
  const typed = pendingSecret && pendingSecret.username === signedIn
    && Date.now() - pendingSecret.at < PENDING_SECRET_MS ? pendingSecret.password : null;
  if (!typed) {
    await keyFor(userId);
    return;
  }
  await unlockWithVerifiedSecret(session, typed);
}

/**
 * `typed` is this person's password, as the server has just said: open their slot with it.
 * When it does not open (no slot yet, one made under an earlier password, or one wiped by
 * wrong guesses) the store gets a new key: an empty store starts afresh (records are
 * pulled again); a store holding unsent changes gets them back from their escrow.
 * @returns {Promise<boolean>} whether the records are open now
 */
async function unlockWithVerifiedSecret(session, typed) {
  const userId = session.user_id;
  const devices = await deviceDb();
  const passkey = pendingPasskey(userId);
  let key = await tryUnwrap(devices, userId, typed, session.device_unlock, passkey);
  if (!key) {
    key = (await holdsUnsentWork(userId))
      ? await recoverEscrowed(session, typed, passkey).catch(() => null)
      : await startAfresh(session, typed, passkey);
  }
  if (!key) return false;
  if (passkey) runtime.pendingPasskeys.delete(userId);
  holdKey(userId, key);
  await resetFailures(devices, userId);
  await markActive(devices, userId, Date.now());
  await recordOnline(devices, userId, session);
  await shareKey(userId);
  return true;
}

async function startAfresh(session, typed, passkey) {
  if (runtime.db) runtime.db.close();
  runtime.db = null;
  await deleteStore(session.user_id);
  return createSlots(await deviceDb(), session.user_id, typed, session.device_unlock, undefined, passkey);
}

/**
 * The key of this person's store is gone but their unsent changes wait in it, escrowed to
 * the server: the server opens the escrows for their author, the store is encrypted again
 * under a new key, and only then is that key wrapped into a slot (a crash in between
 * leaves the escrows, so this can simply run again).
 * @returns {Promise<CryptoKey|null>} null when some change cannot be opened (queued before
 *   the device knew the server's key): only the previous password opens it then
 */
async function recoverEscrowed(session, typed, passkey) {
  const userId = session.user_id;
  const own = runtime.db && runtime.session?.user_id === userId;
  const db = own ? runtime.db : await openStore(userId, null);
  try {
    const { parts, unescrowed } = await escrowedParts(db);
    if (unescrowed) return null;
    const reply = await syncer.post(session, "/app/outbox-recovery", { parts });
    if (reply.status !== 200 || (reply.body.refused || []).length) return null;
    const fresh = await newDataKey();
    await rekey(db, fresh.key, reply.body.opened, reply.body.rejected || {});
    return await createSlots(await deviceDb(), userId, typed, session.device_unlock, fresh, passkey);
  } finally {
    if (!own) db.close();
  }
}

/** Changes waiting in a store count without its key: their positions are in the clear. */
async function holdsUnsentWork(userId) {
  const db = runtime.db && runtime.session?.user_id === userId ? runtime.db : await openStore(userId, null);
  const [queued, refused] = await Promise.all([db.count("outbox"), db.count("quarantine")]);
  if (db !== runtime.db) db.close();
  return queued + refused > 0;
}

/** The session of the person signed in here whose records are locked but can be unlocked. */
async function lockedSession() {
  const session = await loadSession();
  if (!session || !session.offline || runtime.keys.get(session.user_id)) return null;
  const key = await keyFor(session.user_id);
  if (key) {
    attachKey(runtime.db, key);
    return null;
  }
  return session;
}

/** Whether this person has a key slot here (false: the device is not set up for them yet). */
async function hasSlot(userId) {
  const slots = await slotsOf(await deviceDb(), userId);
  return Boolean(slots && slots.secret);
}

/** The session, once the person's records are open; what sync runs with. */
async function unlockedSession() {
  const session = await loadSession();
  if (!session) return null;
  const key = runtime.keys.get(session.user_id);
  if (key) {
    attachKey(runtime.db, key); // whichever connection to the store is current
    return session;
  }
  return (await lockedSession()) || !runtime.keys.get(session.user_id) ? null : session;
}

const UNLOCK_REFUSALS = {
  "too-long-offline": "This device has not been connected since your last sign-in for too long. Connect to the network and sign in; your records and any changes waiting here are kept.",
  "clock-behind": "This device's clock is behind the time the server last gave it, so it cannot be unlocked offline. Correct the date and time, or connect and sign in. Nothing has been removed.",
};

/** @type {Promise<unknown>} */
let unlockTurn = Promise.resolve();

/**
 * Unlock attempts run one after another: each counts its miss before the next is tried, so
 * guesses sent all at once cannot slip past the limit.
 * @template T
 * @param {() => Promise<T>} attempt
 * @returns {Promise<T>}
 */
function oneAtATime(attempt) {
  const run = unlockTurn.then(attempt, attempt);
  unlockTurn = run.catch(() => undefined);
  return run;
}

/** The unlock screen, and its form. Only the worker answers it. */
async function unlockPage(request, url) {
  // Opened before this worker heard who is signed in (a first visit): ask now.
  const session = (await loadSession()) || await refreshSession();
  const next = localPath(url.searchParams.get("next") || "/");
  if (!session) return Response.redirect(next, 303);
  const { state } = await enforceIdle();
  if (state === "active") return Response.redirect(next, 303);
  const userId = session.user_id;
  const devices = await deviceDb();
  const slots = await slotsOf(devices, userId);
  const short = state === "short";
  const ctx = context(request, url, session, null, [], runtime.db);
  const salt = await prfSalt(userId);
  // Read again for each answer: a wrong PIN may just have turned a short lock into a cold one.
  const show = async (problem, status = 200) => {
    const now = await slotsOf(devices, userId);
    return ctx.render("device/unlock.html", {
      title: "Unlock this device",
      unlock: {
        next, problem,
        mode: runtime.keys.get(userId) ? "short" : now && now.secret ? "cold" : "setup",
        has_pin: Boolean(now && now.pin),
        passkeys: passkeysOf(now).join(" "),
        prf_salt: salt,
        name: session.shell.user ? session.shell.user.display_name : "",
      },
    }, { status });
  };

  if (request.method !== "POST") return show(short ? null : UNLOCK_REFUSALS[unlockRefusal(slots, Date.now())] || null);
  const form = await request.formData();
  if (form.get("csrf_token") !== session.shell.csrf_token) return network(request);
  const password = String(form.get("password") || "");
  const pin = String(form.get("pin") || "");
  if (short) return shortUnlock(userId, password, pin, next, show);
  if (pin && !PIN_PATTERN.test(pin)) {
    return show("A PIN is 4 to 8 digits. Nothing was changed: enter your password again with a PIN of 4 to 8 digits, or leave the PIN empty.", 422);
  }
  const refusal = unlockRefusal(slots, Date.now());
  if (refusal === "no-slot") return setUpLock(session, password, pin, next, show);
  if (refusal) return show(UNLOCK_REFUSALS[refusal], 403);
  const passkey = pendingPasskey(userId);
  const key = await tryUnwrap(devices, userId, password, undefined, passkey);
  if (!key) {
    const { attemptsLeft, wiped } = await countFailure(devices, userId);
    return show(wiped
      ? "That password was wrong too many times, so this device can no longer unlock your records offline. Connect to the network and sign in again; changes waiting to be sent are kept."
      : `That password does not unlock this device. ${attemptsLeft === 1 ? "1 attempt is" : `${attemptsLeft} attempts are`} left before the device must be unlocked online.`, 403);
  }
  if (passkey) runtime.pendingPasskeys.delete(userId);
  holdKey(userId, key);
  await resetFailures(devices, userId);
  await afterColdUnlock(userId, pin);
  kick("unlock");
  return Response.redirect(next, 303);
}

/**
 * The PRF output of a passkey this person used or added here in the last minutes, made with
 * their salt. The unlock page's passkey button asks for the same output later.
 * @param {string} userId
 */
function pendingPasskey(userId) {
  const held = runtime.pendingPasskeys.get(userId);
  if (held && Date.now() - held.at < PENDING_SECRET_MS) return held;
  runtime.pendingPasskeys.delete(userId);
  return null;
}

/** The PRF salt of this person's passkeys: the server's `prf_salt` (services/passkeys.py). */
async function prfSalt(userId) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`clinic-record device key${userId}`)));
}

/**
 * The unlock page's passkey button: the passkey's PRF output opens the key offline.
 * @returns {Promise<{ok: boolean, message?: string}>}
 */
async function unlockWithPasskey(data) {
  const session = await loadSession();
  if (!session || session.user_id !== data.user_id || typeof data.credential_id !== "string" || !(data.prf instanceof ArrayBuffer)) {
    return { ok: false, message: "This page is out of date. Reload it and try again; nothing was changed." };
  }
  const userId = session.user_id;
  const devices = await deviceDb();
  const slots = await slotsOf(devices, userId);
  const refusal = unlockRefusal(slots, Date.now());
  if (refusal && refusal !== "no-slot") return { ok: false, message: UNLOCK_REFUSALS[refusal] };
  const key = await tryUnwrapWithPasskey(devices, userId, { credentialId: data.credential_id, prf: new Uint8Array(data.prf) });
  if (!key) {
    const { attemptsLeft, wiped } = await countFailure(devices, userId);
    return { ok: false, message: wiped
      ? "This device can no longer unlock your records offline. Connect to the network and sign in again; changes waiting to be sent are kept."
      : `That passkey does not unlock this device. Use your password. ${attemptsLeft === 1 ? "1 attempt is" : `${attemptsLeft} attempts are`} left before the device must be unlocked online.` };
  }
  holdKey(userId, key);
  await resetFailures(devices, userId);
  await afterColdUnlock(userId, "");
  kick("unlock");
  return { ok: true };
}

/**
 * The screen locked while the key stayed in memory: the PIN opens it, or the password. Wrong
 * tries of either count towards one limit, past which the key goes.
 */
async function shortUnlock(userId, password, pin, next, show) {
  const devices = await deviceDb();
  const key = /** @type {CryptoKey} */ (runtime.keys.get(userId));
  let result;
  if (password) {
    result = (await tryUnwrap(devices, userId, password)) ? { ok: true } : await countShortLockMiss(devices, userId);
  } else {
    result = await checkPin(devices, userId, key, pin);
  }
  if (result.ok) {
    await markActive(devices, userId, Date.now());
    return Response.redirect(next, 303);
  }
  if (result.cold) {
    await dropKey(userId);
    return show("That was wrong too many times, so the device has locked fully. Enter your password to open your records; nothing has been removed.", 403);
  }
  const what = password ? "password" : "PIN";
  return show(`That ${what} is not right. ${result.attemptsLeft === 1 ? "1 attempt is" : `${result.attemptsLeft} attempts are`} left before your password is needed.`, 403);
}

/** A cold unlock or a set-up succeeded: the person is active from now, with the PIN they chose. */
async function afterColdUnlock(userId, pin) {
  const devices = await deviceDb();
  await markActive(devices, userId, Date.now());
  const key = runtime.keys.get(userId);
  if (pin && key) await setPin(devices, userId, key, pin);
  await shareKey(userId);
}

/**
 * No slot on this device yet (a passkey sign-in, or a sign-in the worker did not see), or
 * the last one was wiped: the password is checked by the server before records are locked
 * under it.
 */
async function setUpLock(session, password, pin, next, show) {
  let reply;
  try {
    reply = await syncer.post(session, "/app/device-secret", { password });
  } catch {
    return show("Setting up this device needs a connection to the server, and there is none just now. Nothing was changed. Try again when the device is connected.", 503);
  }
  if (reply.status === 422 && reply.body.error === "wrong_password") return show(reply.body.message, 403);
  if (reply.status === 429) {
    return show("The password was checked too many times in a short while. Nothing was changed. Wait ten minutes and try again.", 429);
  }
  if (reply.status !== 204) {
    return show(`The server could not check the password just now (${reply.status}). Nothing was changed. Try again in a moment.`, 503);
  }
  if (!(await unlockWithVerifiedSecret(session, password))) {
    // No slot here, so no earlier password can help: only the server's escrow could.
    return show("Changes saved on this device could not be opened with the server's help just now, so the device was not set up. Nothing has been removed. Try again when the device is connected; if this goes on, tell your administrator.", 503);
  }
  // The store may have been made afresh, or lost its cursor to a new key: set it up again.
  await takeUp(session);
  await afterColdUnlock(session.user_id, pin);
  kick("unlock");
  return Response.redirect(next, 303);
}

// ---------------------------------------------------------------------------------------------
// Sync

const syncer = new Syncer({
  db: storeOf,
  session: unlockedSession,
  refreshSession,
  // Not awaited: a write saved while the reports are on their way is pushed at once, beside
  // them, rather than after their answer.
  afterSync: async (session) => { sendReports(session).catch((error) => console.error("reports failed", error)); },
  version: VERSION,
  announce: (status) => broadcast({ type: "status", status: { ...status, version: VERSION } }),
});

function kick(reason) {
  return syncer.run(reason).catch((error) => console.error("sync failed", error));
}

async function broadcast(message) {
  for (const client of await sw.clients.matchAll({ includeUncontrolled: true })) client.postMessage(message);
}

sw.addEventListener("message", (event) => {
  const data = event.data || {};
  const reply = (message) => event.source && event.source.postMessage(message);
  const work = (async () => {
    if (data.type === "hello") {
      // A page rendered by the server says who is signed in; the worker follows.
      const session = await loadSession();
      // A session kept by an older version of the app may lack what this version's pages need.
      const stale = session && session.shell_version !== VERSION;
      if (data.user_id && (!session || session.user_id !== data.user_id || syncer.status.needs_sign_in || stale)) {
        if (await refreshSession()) syncer.status.needs_sign_in = false;
      }
      // A page opened after the unlock keeps the key too, for a worker that restarts later.
      const now = runtime.session;
      if (now && now.user_id === data.user_id && runtime.keys.get(now.user_id)) {
        reply({ type: "data-key", user_id: now.user_id, key: runtime.keys.get(now.user_id) });
      } else if (now && now.user_id === data.user_id && await lockedSession()) {
        // A page the server rendered while this person's records here are locked: nothing
        // syncs until they unlock, so take them there. A device not set up for them yet
        // works online meanwhile, and the page offers the set-up.
        reply({ type: await hasSlot(now.user_id) ? "unlock-needed" : "setup-wanted" });
      }
      await kick("start");
    } else if (data.type === "sync" || data.type === "poke" || data.type === "online") {
      if (data.type === "online") syncer.failures = 0;
      await kick(data.type);
    } else if (data.type === "status") {
      await syncer.refresh({ changed: false });
    } else if (data.type === "passkey-prf") {
      // A passkey used or added in a page: its PRF output, made with this person's salt, waits
      // in memory for the next time the password opens the key.
      const signedIn = (await loadSession())?.user_id;
      if (data.user_id === signedIn && typeof data.credential_id === "string" && data.prf instanceof ArrayBuffer
          && data.salt === await prfSalt(data.user_id)) {
        runtime.pendingPasskeys.set(data.user_id, { credentialId: data.credential_id, prf: new Uint8Array(data.prf), at: Date.now() });
      }
    } else if (data.type === "passkey-unlock") {
      const answer = await oneAtATime(() => unlockWithPasskey(data));
      if (event.ports && event.ports[0]) event.ports[0].postMessage(answer);
    } else if (data.type === "activity" || data.type === "idle-check") {
      // Taps and keys count only while unlocked: typing at the lock screen does not open it.
      const { state, userId } = await enforceIdle();
      if (state === "active" && data.type === "activity") await markActive(await deviceDb(), /** @type {string} */ (userId), Date.now());
      else if (state === "short" || state === "cold") reply({ type: "unlock-needed" });
      else if (state === "none" && data.type === "idle-check") {
        // Locked in another tab (the key dropped): this one must not go on showing records.
        const held = await lockedSession();
        if (held && await hasSlot(held.user_id)) reply({ type: "unlock-needed" });
      }
    } else if (data.type === "data-key") {
      // An open page hands back the key after this worker was stopped and started again.
      if (data.key instanceof CryptoKey && typeof data.user_id === "string") {
        keyWaiters = keyWaiters.filter((waiter) => !waiter(data.user_id, data.key));
      }
    } else if (data.type === "no-key") {
      // A page asked for the key has none: the worker waits only for the others.
      if (typeof data.user_id === "string") keyWaiters = keyWaiters.filter((waiter) => !waiter(data.user_id, null));
    } else if (data.type === "pending-count") {
      const db = await storeOf();
      reply({ type: "pending-count", count: db ? (await stats(db)).pending : 0 });
    }
  })();
  event.waitUntil(work);
});

sw.addEventListener("sync", (event) => event.waitUntil(syncer.run("background-sync")));

// ---------------------------------------------------------------------------------------------
// Requests

sw.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (url.origin !== location.origin) return;
  if (request.method === "GET" && (url.pathname.startsWith("/static/") || url.pathname === "/manifest.webmanifest")) {
    event.respondWith(fromCache(request));
    return;
  }
  if (url.pathname.startsWith("/sync/") || url.pathname.startsWith("/app/")) return;
  if (url.pathname === "/device/unlock") {
    event.respondWith(request.method === "POST" ? oneAtATime(() => unlockPage(request, url)) : unlockPage(request, url));
    return;
  }
  if (url.pathname === "/logout" && request.method === "POST") {
    event.respondWith(signOut(request));
    return;
  }
  if (request.method === "POST" && (url.pathname.startsWith("/login") || url.pathname === "/session/clinic")) {
    event.respondWith(changingWhoOrWhere(request));
    return;
  }
  const answered = answer(request, url);
  event.respondWith(answered);
  // What the page showed is recorded for the audit log once the page has gone out.
  event.waitUntil(answered.catch(() => null).then(() => writeReads())
    .catch((error) => console.error("reads not recorded", error)));
});

async function fromCache(request) {
  const cached = await caches.match(request, { ignoreSearch: false });
  return cached || fetch(request);
}

/** A sign-in, or a switch of clinic: once the server has answered, ask it who and where. */
async function changingWhoOrWhere(request) {
  const path = new URL(request.url).pathname;
  if (path === "/login") {
    // The password opens this person's records on the device once the server accepts the
    // whole sign-in; until then it stays in memory only, not for long, and only for the
    // username it was typed with.
    const form = await request.clone().formData().catch(() => null);
    const password = form && form.get("password");
    const username = form && form.get("username");
    runtime.pendingSecret = typeof password === "string" && password && typeof username === "string"
      ? { username: username.trim().toLowerCase(), password, at: Date.now() } : null;
  } else if (path.startsWith("/login/passkey")) {
    runtime.pendingSecret = null; // a passkey sign-in types no password
  }
  const response = await network(request);
  if (path === "/login" && response.status >= 400) runtime.pendingSecret = null; // refused
  if (response.status < 400) await refreshSession();
  return response;
}

async function signOut(request) {
  // The queue stays in this person's store; it is sent the next time they sign in here.
  const form = await request.clone().formData();
  await forgetUser();
  try {
    return await fetch(request);
  } catch {
    // The server has not heard: the session stays open there until it does. The sign-out is
    // sent before anything else once the network is back (sendSignOut).
    await (await deviceDb()).put("device", String(form.get("csrf_token") || ""), "sign_out_pending");
    return Response.redirect("/login", 303);
  }
}

/** A sign-out made offline reaches the server before any other request does. */
async function sendSignOut() {
  const db = await deviceDb();
  const token = await db.get("device", "sign_out_pending");
  if (token === undefined) return;
  try {
    await fetch("/logout", { method: "POST", credentials: "same-origin", body: new URLSearchParams({ csrf_token: token }), redirect: "manual" });
    await db.delete("device", "sign_out_pending");
  } catch { /* still offline: kept for the next request */ }
}

async function ready() {
  // The server said this session has ended: the person signs in again before seeing patients.
  if (syncer.status.needs_sign_in) return null;
  const session = await loadSession();
  if (!session || !session.offline) return null;
  if (!runtime.keys.get(session.user_id)) return null;
  if (initialSyncDone.has(runtime.db)) return session;
  const initial = await getMeta(runtime.db, "initial_sync");
  if (initial && initial.done) initialSyncDone.add(runtime.db);
  return initial && initial.done ? session : null;
}

/** Stores whose first sync has ended, as last read: asked once, not at every page. */
let initialSyncDone = new WeakSet();
// A pull that starts the rows again (reset) starts the first sync again too.
watchRows((_db, change) => {
  if (change.reset) initialSyncDone = new WeakSet();
});

async function answer(request, url) {
  const timing = new Timing();
  let session, found, form;
  try {
    if (!url.pathname.startsWith("/login")) {
      const { state, userId, slots } = await enforceIdle();
      if (state === "short" || state === "cold") return toUnlock(request, url);
      if (state === "active" && request.mode === "navigate") await markActive(await deviceDb(), /** @type {string} */ (userId), Date.now(), slots);
    }
    const held = request.mode === "navigate" ? await lockedSession() : null;
    if (held && await hasSlot(held.user_id)) {
      return Response.redirect(`/device/unlock?next=${encodeURIComponent(url.pathname + url.search)}`, 303);
    }
    session = await ready();
    found = session && (url.pathname === "/device" || url.pathname.startsWith("/device/")
      ? { handler: devicePage, params: [] } : match(request.method, url.pathname));
    form = found && request.method === "POST" ? await request.clone().formData() : null;
  } catch (error) {
    console.error("the device could not answer; asking the server", url.pathname, error);
    return network(request);
  }
  if (!session || !found) return network(request);
  // Forms the worker rendered carry the session's token; anything else (a form from another
  // site, or a page the server rendered) goes to the server, which checks its own way.
  if (form && form.get("csrf_token") !== session.shell.csrf_token) return network(request);
  const db = runtime.db;
  timing.lap("session");
  const ctx = context(request, url, session, form, found.params, db, timing);
  try {
    return await found.handler(ctx);
  } catch (error) {
    console.error("page failed", url.pathname, error);
    return ctx.render("error.html", {
      title: "This page could not be shown", status: 500,
      text: "The device hit an unexpected problem showing this page. Nothing you saved is lost. Go back and try again.",
    }, { status: 500 });
  }
}

/**
 * The device locked while the person was away: a page goes to the unlock screen, and so
 * does a page whose htmx request arrives now. Signing in as someone else stays open.
 */
function toUnlock(request, url) {
  if (request.mode === "navigate") {
    return Response.redirect(`/device/unlock?next=${encodeURIComponent(url.pathname + url.search)}`, 303);
  }
  const from = request.referrer ? new URL(request.referrer) : null;
  const back = from && from.origin === location.origin ? from.pathname + from.search : "/";
  return new Response("", { status: 204, headers: { "HX-Redirect": `/device/unlock?next=${encodeURIComponent(back)}` } });
}

async function network(request) {
  try {
    await sendSignOut();
    // A page's own form post that the server answers with a redirect: the browser follows it,
    // and if this worker renders that page, the server's message must still show.
    if (request.method === "POST" && request.mode === "navigate") runtime.serverMessages = true;
    return await fetch(request);
  } catch {
    return offlinePage(request);
  }
}

/** What a person sees when a page needs the server and there is none. */
async function offlinePage(request) {
  const session = await loadSession();
  const post = request.method === "POST";
  const text = post
    ? "This action needs a connection to the server, and there is none just now. Nothing was saved. Go back; try again when the device is connected."
    : "This page needs a connection to the server, and there is none just now. Worklists, patient search, charts, registration, vitals, notes, visits and appointment requests keep working on this device.";
  if (!session || !(await environment())) {
    return new Response(`<!doctype html><meta charset="utf-8"><title>No connection</title><p>${text}</p>`,
      { status: 503, headers: { "Content-Type": "text/html; charset=utf-8" } });
  }
  const ctx = context(request, new URL(request.url), session, null, [], runtime.db);
  return ctx.render("error.html", { title: "No connection", status: 503, text }, { status: 503 });
}

async function environment() {
  if (runtime.env) return runtime.env;
  const cached = TEMPLATES_URL && await caches.match(TEMPLATES_URL);
  const response = cached || (TEMPLATES_URL ? await fetch(TEMPLATES_URL).catch(() => null) : null);
  if (!response) return null;
  const bundle = await response.json();
  runtime.env = createEnvironment(sw.nunjucks, bundle.sources);
  return runtime.env;
}

const SERVER_MESSAGES_MS = 1500;

/** The server's answer if it comes within `timeoutMs`; null when it does not, or fails. */
async function fetchWithin(input, timeoutMs, init = {}) {
  const deadline = withDeadline(timeoutMs);
  try {
    return await fetch(input, { credentials: "same-origin", ...init, signal: deadline.signal });
  } catch {
    return null;
  } finally {
    deadline.clear();
  }
}

async function messagesLeftOnServer() {
  if (!runtime.serverMessages) return [];
  runtime.serverMessages = false;
  const response = await fetchWithin("/app/messages.json", SERVER_MESSAGES_MS, { headers: { Accept: "application/json" } });
  return response && response.ok ? (await response.json()).messages || [] : [];
}

function context(request, url, session, form, params, db = runtime.db, timing = new Timing()) {
  const isHtmx = request.headers.get("HX-Request") === "true";
  const boosted = request.headers.get("HX-Boosted") === "true";
  return {
    request, url, params, session, form, db,
    async records(patientId = null) {
      const [rows, queued] = await Promise.all([patientId
        ? rowsOfPatient(db, patientId)
        : Promise.all([recordsOfEntity(db, "patient"), recordsOfEntity(db, "visit")]).then(([patients, visits]) => [
          ...patients.map((record) => ({ entity: "patient", id: record.id, record })),
          ...visits.map((record) => ({ entity: "visit", id: record.id, record }))]),
      pending(db)]);
      const relevant = patientId ? queued.filter((m) => m.patient_id === patientId || m.entity_id === patientId) : queued;
      const records = withPending(recordsFrom(rows), relevant);
      timing.lap("records");
      return records;
    },
    /** Every patient on the device (from the worker's index), with pending changes replayed. */
    async patients() {
      const [confirmed, queued] = await Promise.all([patientRecords(db), pending(db)]);
      const relevant = queued.filter((m) => m.entity === "patient" || String(m.type).startsWith("patient."));
      const records = relevant.length ? withPending(confirmed, relevant) : confirmed;
      timing.lap("patients");
      return records;
    },
    /** Start reading the patients now: the person is about to search. */
    warmPatients() {
      patientRecords(db).catch(() => {});
    },
    async render(name, pageContext, options = {}) {
      const env = await environment();
      const chosen = options.fragment && isHtmx && !boosted ? options.fragment : name;
      // Messages go to the next whole page, never to a fragment a poll fetched meanwhile.
      const messages = chosen === name ? [...(await messagesLeftOnServer()), ...runtime.flashes.splice(0)] : [];
      const shell = { ...session.shell, messages, request_id: null };
      const html = renderTemplate(env, chosen, { ...shell, ...pageContext });
      timing.lap("render");
      return new Response(html, {
        status: options.status || 200,
        // The server's policy (Content-Security-Policy and the rest) holds for the worker's pages too.
        headers: {
          ...(session.page_headers || {}), "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
          "X-Rendered-By": "service-worker", "Server-Timing": timing.header(),
        },
      });
    },
    redirect: (to) => new Response(null, { status: 303, headers: { Location: to } }),
    flash(category, message) {
      runtime.flashes.push({ category, text: message });
    },
    async queue(mutations) {
      // The same form sent twice (a double tap, Back and send again) carries the same ids:
      // what is already queued, sent or refused is not queued again; the rest is.
      const known = await Promise.all(mutations.map(async (m) => Boolean(
        (await db.get("outbox", m.mid)) || (await db.get("sent", m.mid)) || (await db.get("quarantine", m.mid)))));
      const fresh = mutations.filter((_, i) => !known[i]);
      if (fresh.length) await enqueue(db, fresh, session.schemas.types);
      // Where the browser has Background Sync, it wakes the worker when the network returns
      // even with no page open; elsewhere the pages' triggers do it.
      sw.registration.sync?.register("flush").catch(() => {});
      kick("write");
    },
    notLocal: () => network(request),
    /** The server's own answer to this request, if it comes in time; else null. */
    async fromServer(timeoutMs) {
      if (navigator.onLine === false || syncer.status.offline) return null;
      // A page's own request cannot be re-sent with a signal: the same address and headers
      // (htmx's among them) are asked for anew.
      const response = await fetchWithin(request.url, timeoutMs, { headers: request.headers });
      return response && response.ok && !response.redirected ? response : null;
    },
    read: async (action, patientIds, detail) => {
      recordRead(db, action, patientIds, detail);
      timing.lap("read");
    },
    /** Now by the server's clock, as last seen: a tablet's clock may be minutes off. */
    async now() {
      const offset = await getMeta(db, "clock_offset_ms");
      return new Date(Date.now() + (Number.isFinite(offset) ? offset : 0)).toISOString();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// This device: sync state, storage, and the changes the server refused

async function devicePage(ctx) {
  const db = ctx.db;
  const parts = ctx.url.pathname.split("/").filter(Boolean); // device, quarantine, <mid>, <action>
  if (ctx.request.method === "POST" && parts[1] === "quarantine" && parts[2]) {
    return quarantineAction(ctx, db, parts[2], parts[3]);
  }
  await syncer.refresh({ changed: false });
  const status = syncer.status;
  const queued = await pending(db);
  const refused = await listQuarantine(db);
  const storage = status.storage || {};
  return ctx.render("device/status.html", {
    device: {
      state: status.state, needs_sign_in: status.needs_sign_in, last_error: status.last_error,
      last_synced_at: status.last_synced_at, version: VERSION,
      client_id: await getMeta(db, "client_id"),
      storage: storageText(storage.used, storage.quota),
      persisted: storage.persisted === true ? "yes" : storage.persisted === false ? "no" : "unknown",
      pending: queued.map((m) => ({ mid: m.mid, label: label(ctx.session, m.type), created_at: m.created_at, seq: m.seq ?? null })),
      quarantine: refused.map((q) => quarantineView(ctx.session, q)),
      conflicts: ((await getSecretMeta(db, "conflicts")) || []).map((c) => ({
        ...c, label: label(ctx.session, c.type),
        fields: c.fields.map((f) => ({ ...f, yours: shown(f.yours), kept: shown(f.kept) })),
      })),
    },
  });
}

const shown = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));

function storageText(used, quota) {
  if (typeof used !== "number") return "Unknown";
  const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
  return quota ? `${mb(used)} used of ${mb(quota)} (${Math.floor((used * 100) / quota)}%)` : `${mb(used)} used`;
}

function label(session, type) {
  const spec = session.schemas.types[type];
  return spec ? spec.label : type;
}

function quarantineView(session, entry) {
  const m = entry.mutation;
  const error = entry.error || {};
  // The server names fields within the mutation ("data.phone"); the form shows data's fields.
  const problems = Object.fromEntries((error.problems || []).map((p) => [String(p.field).replace(/^data\./, "").split(".")[0], p.message]));
  const fields = Object.entries(m.data || {})
    // Record ids are not the person's to correct; what they typed is.
    .filter(([name, v]) => !name.endsWith("_id") && (v === null || ["string", "number"].includes(typeof v)))
    .map(([name, value]) => ({ name, value: value ?? "", problem: problems[name] || null }));
  return {
    mid: m.mid, label: label(session, m.type), type: m.type, created_at: m.created_at || m.client_ts || null,
    quarantined_at: entry.quarantined_at, reason: error.message || "The server refused this change.",
    code: error.code || null, request_id: entry.request_id || null, fields,
    conflict: error.conflict || null,
  };
}

async function quarantineAction(ctx, db, mid, action) {
  const entry = await getQuarantined(db, mid);
  if (!entry) {
    ctx.flash("info", "That change is no longer waiting here.");
    return ctx.redirect("/device");
  }
  if (action === "discard") {
    await reportDiscard(ctx.session, entry);
    await discard(db, mid);
    ctx.flash("success", "The change was discarded. The discard is recorded in the access log.");
    return ctx.redirect("/device");
  }
  // Send again, corrected: string fields from the form, others as they were.
  const data = { ...entry.mutation.data };
  for (const [name, value] of Object.entries(data)) {
    if (ctx.form && ctx.form.has(`field_${name}`)) {
      const typed = String(ctx.form.get(`field_${name}`));
      data[name] = typeof value === "number" && typed.trim() !== "" && Number.isFinite(Number(typed)) ? Number(typed) : typed;
    }
  }
  const spec = ctx.session.schemas.types[entry.mutation.type];
  const problems = spec ? validate(spec.schema, data) : [];
  if (problems.length) {
    ctx.flash("error", `Not sent: ${Object.values(errorsOf(problems)).join(" ")}`);
    return ctx.redirect("/device");
  }
  await resend(db, mid, data, ctx.session.schemas.types);
  kick("write");
  ctx.flash("success", "The corrected change is queued and will be sent.");
  return ctx.redirect("/device");
}

async function reportDiscard(session, entry) {
  const m = entry.mutation;
  await report(runtime.db, "/device/discarded", {
    mid: m.mid, type: m.type, entity: m.entity, entity_id: m.entity_id, patient_id: m.patient_id || m.data?.patient_id || null,
    error_code: entry.error?.code || null, request_id: entry.request_id || null,
  });
  await sendReports(session);
}

const READS_PER_REPORT = 500;

/**
 * What the server must hear of, though it is not a change to a record (a discard, the patient
 * pages shown from the device for the audit log), waits in `meta` until it can be sent: each
 * under its own key, encrypted, written once and deleted once sent, so recording one costs
 * the same however long the device has been offline.
 */
const REPORT_PREFIX = "report:";
const REPORT_KEYS = IDBKeyRange.bound(REPORT_PREFIX, `${REPORT_PREFIX}\uffff`);
let reportsMade = 0;

const reportKey = () => `${REPORT_PREFIX}${String(Date.now()).padStart(15, "0")}:${String(reportsMade++).padStart(9, "0")}:${newId()}`;

async function report(db, path, body) {
  await writeReads();
  await setSecretMeta(db, { [reportKey()]: { path, body } });
}

/** @type {{db: any, read: any}[]} pages shown whose reads are not written yet (writeReads) */
let unwrittenReads = [];

/**
 * A patient page shown from the device: audited like one from the server. Kept in memory
 * until the answer has gone out; the fetch handler then writes it (writeReads), so showing
 * a page waits for no write.
 */
function recordRead(db, action, patientIds, detail = {}) {
  unwrittenReads.push({ db, read: { action, patient_ids: patientIds, at: new Date().toISOString(), detail } });
}

/** The reads kept in memory, written to their stores: one entry per store and batch. */
async function writeReads() {
  if (!unwrittenReads.length) return;
  const taken = unwrittenReads;
  unwrittenReads = [];
  const byStore = new Map();
  for (const { db, read } of taken) byStore.set(db, [...(byStore.get(db) || []), read]);
  for (const [db, reads] of byStore) {
    for (let i = 0; i < reads.length; i += READS_PER_REPORT) {
      await setSecretMeta(db, { [reportKey()]: { path: "/device/reads", body: { reads: reads.slice(i, i + READS_PER_REPORT) } } });
    }
  }
}

/** @type {Promise<unknown>} */
let sendingReports = Promise.resolve();

/** One sending at a time: two would send the same reports twice. */
function sendReports(session) {
  const run = sendingReports.then(() => sendHeldReports(session));
  sendingReports = run.catch(() => undefined);
  return run;
}

async function sendHeldReports(session) {
  const db = runtime.db;
  if (!db) return;
  await writeReads();
  // An earlier version kept every report in one list.
  const listed = await getSecretMeta(db, "reports");
  if (listed) {
    await setSecretMeta(db, { reports: undefined, ...Object.fromEntries(listed.map((r) => [reportKey(), { path: r.path, body: r.body }])) });
  }
  const held = await secretMetaIn(db, REPORT_KEYS);
  if (!held.length) return;
  const clientId = await getMeta(db, "client_id");
  // Reads go together, a few hundred to a request.
  /** @type {{path: string, body: any, keys: string[]}[]} */
  const posts = [];
  for (const { key, value } of held) {
    const last = posts[posts.length - 1];
    if (value.path === "/device/reads" && last && last.path === value.path
        && last.body.reads.length + value.body.reads.length <= READS_PER_REPORT) {
      last.body.reads.push(...value.body.reads);
      last.keys.push(key);
    } else {
      posts.push({ path: value.path, body: value.body.reads ? { ...value.body, reads: [...value.body.reads] } : value.body, keys: [key] });
    }
  }
  /** @type {string[]} */
  const sent = [];
  for (const { path, body, keys } of posts) {
    let reply;
    try {
      reply = await syncer.post(session, path, { ...body, client_id: clientId });
    } catch {
      break; // no connection: the rest waits, in order
    }
    // Kept for later when the server cannot take it now; dropped when it never will (another
    // 4xx), so it cannot block the rest forever.
    if (reply.status >= 500 || reply.status === 401 || reply.status === 429) break;
    sent.push(...keys);
  }
  if (sent.length) await setMeta(db, Object.fromEntries(sent.map((key) => [key, undefined])));
}
