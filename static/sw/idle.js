// @ts-check
// A tablet left alone (DESIGN.md §6). After a short idle time the screen locks behind the
// person's PIN while their data key stays in memory, so a colleague stepping away for a
// minute is back in one tap; after a long idle time, or too many wrong PINs, the key is
// dropped and only the password (a cold unlock) opens the records again.
//
// The PIN never wraps the data key: its check value is encrypted under that key, so the
// PIN can only be tried while the key is in memory, and the device's disk says nothing
// about it. Times and counts live in the person's key slot, outside the encrypted store, so
// a worker that was stopped and started again still knows how long the device sat idle.
import { decryptBytes, encryptBytes } from "/static/idb/vault.js";
import { slotsOf } from "/static/sw/keys.js";

const SLOTS = "keyslots";
const PIN_ITERATIONS = 100_000;
const SALT_BYTES = 16;
/** A device clock this far behind the last activity it recorded has been set back. */
const CLOCK_SLACK_MS = 60_000;
export const PIN_PATTERN = /^[0-9]{4,8}$/;
/** Use is recorded at most this often; the idle times are counted in minutes. */
const RECORD_EVERY_MS = 15_000;

const encoder = new TextEncoder();

/** @param {string} userId */
const pinContext = (userId) => `pin\u0000${userId}`;

/**
 * @typedef {{salt: Uint8Array, iterations: number, sealed: Uint8Array}} PinSlot
 * @typedef {"active"|"short"|"cold"} IdleState
 */

/**
 * How locked the device is for the person of `slots` after sitting idle.
 * "short": the PIN (or the password) opens it, the key is still needed in memory;
 * "cold": the key must go.
 * @param {any} slots
 * @param {number} nowMs
 * @returns {IdleState}
 */
export function idleState(slots, nowMs) {
  if (!slots || slots.last_active_at == null) return "active";
  const idle = nowMs - slots.last_active_at;
  // A clock set back would make a long absence look short.
  if (idle < -CLOCK_SLACK_MS) return "cold";
  if (idle > (slots.cold_minutes ?? 60) * 60_000) return "cold";
  if (idle > (slots.idle_minutes ?? 5) * 60_000) return "short";
  return "active";
}

/**
 * The person is using the device now (or has just unlocked it).
 * @param {any} deviceDb
 * @param {string} userId
 * @param {number} nowMs
 * @param {any} [known] the slot as just read by the caller, saving a second read
 */
export async function markActive(deviceDb, userId, nowMs, known = undefined) {
  const slots = known ?? await slotsOf(deviceDb, userId);
  if (!slots) return;
  // Every page load lands here: within the minute the idle lock counts in, once is enough.
  const recent = slots.last_active_at && nowMs - slots.last_active_at >= 0 && nowMs - slots.last_active_at < RECORD_EVERY_MS;
  if (recent && !slots.pin_failures) return;
  slots.last_active_at = nowMs;
  slots.pin_failures = 0;
  await deviceDb.put(SLOTS, slots, userId);
}

/**
 * Make the next idle check say "cold", whatever the time: the key is being dropped.
 * @param {any} deviceDb
 * @param {string} userId
 */
export async function markCold(deviceDb, userId) {
  const slots = await slotsOf(deviceDb, userId);
  if (!slots) return;
  slots.last_active_at = 0;
  slots.pin_failures = 0;
  await deviceDb.put(SLOTS, slots, userId);
}

/** @param {string} pin @param {Uint8Array} salt @param {number} iterations */
async function pinCheckValue(pin, salt, iterations) {
  const material = await crypto.subtle.importKey("raw", encoder.encode(pin), "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, material, 256));
}

/**
 * Set (or replace) the person's PIN on this device. Needs their data key: the PIN is only
 * ever checked against it.
 * @param {any} deviceDb
 * @param {string} userId
 * @param {CryptoKey} key
 * @param {string} pin
 */
export async function setPin(deviceDb, userId, key, pin) {
  if (!PIN_PATTERN.test(pin)) throw new RangeError("a PIN is 4 to 8 digits");
  const slots = await slotsOf(deviceDb, userId);
  if (!slots) throw new Error("no key slot for this person on the device");
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const value = await pinCheckValue(pin, salt, PIN_ITERATIONS);
  slots.pin = { salt, iterations: PIN_ITERATIONS, sealed: await encryptBytes(key, pinContext(userId), value) };
  slots.pin_failures = 0;
  await deviceDb.put(SLOTS, slots, userId);
}

/**
 * Whether `pin` is the person's PIN. Wrong ones are counted; past the limit the caller
 * must drop the key (the slot is marked cold here).
 * @param {any} deviceDb
 * @param {string} userId
 * @param {CryptoKey} key
 * @param {string} pin
 * @returns {Promise<{ok: true} | {ok: false, attemptsLeft: number, cold: boolean}>}
 */
export async function checkPin(deviceDb, userId, key, pin) {
  const slots = await slotsOf(deviceDb, userId);
  if (!slots || !slots.pin) return { ok: false, attemptsLeft: 0, cold: true };
  const { salt, iterations, sealed } = slots.pin;
  let expected;
  try {
    expected = await decryptBytes(key, pinContext(userId), sealed);
  } catch {
    // Sealed under another key (the store was re-keyed): this PIN can no longer be checked.
    return wrongPin(deviceDb, userId, slots, true);
  }
  const given = await pinCheckValue(pin, salt, iterations);
  if (given.length === expected.length && given.every((byte, i) => byte === expected[i])) {
    return { ok: true };
  }
  return wrongPin(deviceDb, userId, slots, false);
}

/**
 * @param {any} deviceDb
 * @param {string} userId
 * @param {any} slots
 * @param {boolean} unusable
 * @returns {Promise<{ok: false, attemptsLeft: number, cold: boolean}>}
 */
async function wrongPin(deviceDb, userId, slots, unusable) {
  slots.pin_failures = (slots.pin_failures || 0) + 1;
  const attemptsLeft = unusable ? 0 : Math.max(0, (slots.max_pin_failures ?? 5) - slots.pin_failures);
  if (attemptsLeft === 0) {
    slots.last_active_at = 0;
    slots.pin_failures = 0;
  }
  await deviceDb.put(SLOTS, slots, userId);
  return { ok: false, attemptsLeft, cold: attemptsLeft === 0 };
}

/**
 * A wrong password at the short lock counts like a wrong PIN (the same limit); it is not a
 * cold-unlock guess, since the key is still in memory.
 * @param {any} deviceDb
 * @param {string} userId
 */
export async function countShortLockMiss(deviceDb, userId) {
  const slots = await slotsOf(deviceDb, userId);
  if (!slots) return { ok: false, attemptsLeft: 0, cold: true };
  return wrongPin(deviceDb, userId, slots, false);
}
