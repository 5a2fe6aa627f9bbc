// @ts-check
// Key slots: how a person's data key is kept on the device (DESIGN.md §6).
//
// The data key itself is never stored. A slot holds it wrapped (AES-GCM) under a key
// derived from the person's unlock secret with PBKDF2-SHA256; the parameters are kept with
// the slot so they can be raised later. The unlock secret is the account password: the
// device learns it only from a sign-in the server accepted, so a mistyped secret can never
// lock records away. Wrong guesses are counted here, outside the encrypted store; too many
// remove the slot, never the store (the queue in it waits for a new slot).
//
// A passkey whose authenticator has the PRF extension can hold a second slot: the data key
// wrapped under a key derived (HKDF-SHA256) from the passkey's PRF output for this person's
// salt. The output never leaves the device. Such a slot is made only when the raw key is at
// hand: when a slot is made, or the password opens one.
import { decryptBytes, encryptBytes, importDataKey, newDataKey } from "/static/idb/vault.js";

export const MIN_ITERATIONS = 600_000;
const SALT_BYTES = 16;
const SLOTS = "keyslots";

/**
 * @typedef {{salt: Uint8Array, iterations: number, hash: "SHA-256", wrapped: Uint8Array}} SecretSlot
 * @typedef {{user_id: string, secret: SecretSlot|null, failures: number,
 *   last_sign_in_at: string|null, last_server_time: string|null, offline_hours: number,
 *   max_failures: number, last_active_at?: number, idle_minutes?: number,
 *   cold_minutes?: number, max_pin_failures?: number, pin_failures?: number,
 *   pin?: import("/static/sw/idle.js").PinSlot, passkeys?: Record<string, {wrapped: Uint8Array}>}} Slots
 * @typedef {{credentialId: string, prf: Uint8Array}} PrfOutput a passkey's PRF output for this person's salt
 * @typedef {{offline_hours: number, iterations: number, max_failures: number,
 *   idle_minutes?: number, cold_minutes?: number, max_pin_failures?: number}} UnlockPolicy
 */

const encoder = new TextEncoder();

/** @param {string} userId */
const wrapContext = (userId) => `data-key\u0000${userId}`;

/**
 * @param {string} secret
 * @param {Uint8Array} salt
 * @param {number} iterations
 */
async function keyFromSecret(secret, salt, iterations) {
  const material = await crypto.subtle.importKey("raw", encoder.encode(secret), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt, iterations },
    material, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/**
 * @param {any} deviceDb
 * @param {string} userId
 * @returns {Promise<Slots|undefined>}
 */
export function slotsOf(deviceDb, userId) {
  return deviceDb.get(SLOTS, userId);
}

/**
 * A new data key for `userId` on this device, wrapped under `secret`. Replaces any slot
 * held before: the caller has made sure nothing needs the old key.
 * @param {any} deviceDb
 * @param {string} userId
 * @param {string} secret
 * @param {UnlockPolicy} policy
 * @param {{raw: Uint8Array, key: CryptoKey}} [fresh] a key already made (newDataKey)
 * @param {PrfOutput|null} [passkey] a passkey to wrap the key under as well
 * @returns {Promise<CryptoKey>}
 */
export async function createSlots(deviceDb, userId, secret, policy, fresh, passkey) {
  const { raw, key } = fresh ?? await newDataKey();
  try {
    const secretSlot = await wrapUnder(userId, raw, secret, policy.iterations);
    /** @type {Slots} */
    const slots = {
      user_id: userId, secret: secretSlot, failures: 0, last_sign_in_at: null,
      last_server_time: null, last_active_at: Date.now(), ...lockRules(policy),
    };
    if (passkey) await addPasskeySlot(slots, userId, raw, passkey);
    await deviceDb.put(SLOTS, slots, userId);
    return key;
  } finally {
    raw.fill(0);
  }
}

/**
 * @param {string} userId
 * @param {Uint8Array} raw
 * @param {string} secret
 * @param {number} iterations
 * @returns {Promise<SecretSlot>}
 */
async function wrapUnder(userId, raw, secret, iterations) {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const rounds = Math.max(MIN_ITERATIONS, iterations || 0);
  const wrapping = await keyFromSecret(secret, salt, rounds);
  return { salt, iterations: rounds, hash: "SHA-256", wrapped: await encryptBytes(wrapping, wrapContext(userId), raw) };
}

/**
 * Try `secret` on the slot; nothing is counted (the caller decides whether a miss counts).
 * When the slot's parameters are below `policy`, the key is wrapped again with the new ones.
 * @param {any} deviceDb
 * @param {string} userId
 * @param {string} secret
 * @param {UnlockPolicy} [policy]
 * @param {PrfOutput|null} [passkey] a passkey to wrap the key under as well, once it opens
 * @returns {Promise<CryptoKey|null>} null when the secret does not open it
 */
export async function tryUnwrap(deviceDb, userId, secret, policy, passkey) {
  const slots = await slotsOf(deviceDb, userId);
  if (!slots || !slots.secret) return null;
  const { salt, iterations, wrapped } = slots.secret;
  let raw;
  try {
    raw = await decryptBytes(await keyFromSecret(secret, salt, iterations), wrapContext(userId), wrapped);
  } catch {
    return null;
  }
  try {
    const raise = policy && policy.iterations > iterations;
    if (raise) slots.secret = await wrapUnder(userId, raw, secret, policy.iterations);
    if (passkey) await addPasskeySlot(slots, userId, raw, passkey);
    if (raise || passkey) await deviceDb.put(SLOTS, slots, userId);
    return await importDataKey(raw);
  } finally {
    raw.fill(0);
  }
}

/** @param {string} userId @param {string} credentialId */
const passkeyContext = (userId, credentialId) => `data-key\u0000${userId}\u0000passkey\u0000${credentialId}`;

/** @param {Uint8Array} prf @param {string} userId */
async function keyFromPrf(prf, userId) {
  const material = await crypto.subtle.importKey("raw", prf, "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: encoder.encode(`clinic-record device unlock\u0000${userId}`) },
    material, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/**
 * @param {Slots} slots
 * @param {string} userId
 * @param {Uint8Array} raw
 * @param {PrfOutput} passkey
 */
async function addPasskeySlot(slots, userId, raw, passkey) {
  const wrapping = await keyFromPrf(passkey.prf, userId);
  slots.passkeys = { ...(slots.passkeys || {}),
    [passkey.credentialId]: { wrapped: await encryptBytes(wrapping, passkeyContext(userId, passkey.credentialId), raw) } };
}

/**
 * Open the key with a passkey's PRF output; nothing is counted here either.
 * @param {any} deviceDb
 * @param {string} userId
 * @param {PrfOutput} passkey
 * @returns {Promise<CryptoKey|null>}
 */
export async function tryUnwrapWithPasskey(deviceDb, userId, passkey) {
  const slots = await slotsOf(deviceDb, userId);
  const slot = slots && slots.passkeys && slots.passkeys[passkey.credentialId];
  if (!slot) return null;
  let raw;
  try {
    raw = await decryptBytes(await keyFromPrf(passkey.prf, userId), passkeyContext(userId, passkey.credentialId), slot.wrapped);
  } catch {
    return null;
  }
  try {
    return await importDataKey(raw);
  } finally {
    raw.fill(0);
  }
}

/**
 * The passkeys that can unlock this person's records here.
 * @param {Slots|undefined} slots
 * @returns {string[]} credential ids (base64url)
 */
export function passkeysOf(slots) {
  return slots && slots.secret && slots.passkeys ? Object.keys(slots.passkeys) : [];
}

/**
 * The server accepted this person just now: note when they last signed in fully, the
 * server's clock, and the organization's unlock rules; the count of misses starts again.
 * @param {any} deviceDb
 * @param {string} userId
 * @param {{signed_in_at?: string|null, server_time?: string|null, device_unlock?: UnlockPolicy}} session
 */
export async function recordOnline(deviceDb, userId, session) {
  const slots = await slotsOf(deviceDb, userId);
  if (!slots) return;
  slots.failures = 0;
  if (session.signed_in_at) slots.last_sign_in_at = session.signed_in_at;
  if (session.server_time) slots.last_server_time = session.server_time;
  if (session.device_unlock) Object.assign(slots, lockRules(session.device_unlock));
  await deviceDb.put(SLOTS, slots, userId);
}

/**
 * The organization's rules a slot keeps, to apply them offline.
 * @param {UnlockPolicy} policy
 */
function lockRules(policy) {
  return {
    offline_hours: policy.offline_hours, max_failures: policy.max_failures,
    // Absent from an older server's policy: idle.js has the defaults.
    idle_minutes: policy.idle_minutes, cold_minutes: policy.cold_minutes,
    max_pin_failures: policy.max_pin_failures,
  };
}

/**
 * Why a cold unlock may not be tried now, or null when it may.
 * @param {Slots|undefined} slots
 * @param {number} nowMs this device's clock
 * @returns {null|"no-slot"|"too-long-offline"|"clock-behind"}
 */
export function unlockRefusal(slots, nowMs) {
  if (!slots || !slots.secret) return "no-slot";
  const lastServer = slots.last_server_time ? Date.parse(slots.last_server_time) : NaN;
  // A clock set back would stretch the offline window below; a clock behind the last time
  // the server told us cannot be right.
  if (Number.isFinite(lastServer) && nowMs < lastServer - CLOCK_SLACK_MS) return "clock-behind";
  const signedIn = slots.last_sign_in_at ? Date.parse(slots.last_sign_in_at) : NaN;
  if (!Number.isFinite(signedIn) || nowMs - signedIn > slots.offline_hours * 3_600_000) return "too-long-offline";
  return null;
}

/** A tablet's clock drifts; this much behind the server's last word is forgiven. */
const CLOCK_SLACK_MS = 5 * 60_000;

/**
 * A wrong secret at the unlock screen. Past the limit the slot goes: the store stays,
 * unreadable until the person signs in online and the device makes a new key.
 * @param {any} deviceDb
 * @param {string} userId
 * @returns {Promise<{attemptsLeft: number, wiped: boolean}>}
 */
export async function countFailure(deviceDb, userId) {
  const slots = await slotsOf(deviceDb, userId);
  if (!slots) return { attemptsLeft: 0, wiped: true };
  slots.failures += 1;
  const attemptsLeft = Math.max(0, slots.max_failures - slots.failures);
  if (attemptsLeft === 0) {
    slots.secret = null;
    slots.passkeys = {};
  }
  await deviceDb.put(SLOTS, slots, userId);
  return { attemptsLeft, wiped: attemptsLeft === 0 };
}

/**
 * @param {any} deviceDb
 * @param {string} userId
 */
export async function resetFailures(deviceDb, userId) {
  const slots = await slotsOf(deviceDb, userId);
  if (slots && slots.failures) {
    slots.failures = 0;
    await deviceDb.put(SLOTS, slots, userId);
  }
}
