// @ts-check
// Encryption of everything the device keeps about patients (DESIGN.md §6).
//
// Each person's store has a data key: AES-GCM, 256 bits, a non-extractable CryptoKey that
// lives in memory only. Records are encrypted before a transaction opens and decrypted
// after it closes: WebCrypto is asynchronous, and awaiting it inside an IndexedDB
// transaction would let the transaction commit half-way. So the stores keep in the clear
// only what their indexes and their bookkeeping need (ids, versions, positions, states),
// never a name, a value or a note.

const IV_BYTES = 12;
const KEY_BITS = 256;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Thrown when a store is used before its person has unlocked it on this device. */
export class LockedError extends Error {
  constructor() {
    super("this person's records on the device are locked");
    this.name = "LockedError";
  }
}

/** @type {WeakMap<object, CryptoKey>} an open store → the data key it was opened with */
const keys = new WeakMap();

/**
 * Remember which data key encrypts `db`'s records.
 * @param {object} db
 * @param {CryptoKey} key
 */
export function attachKey(db, key) {
  if (!(key instanceof CryptoKey)) throw new TypeError("a store needs its data key");
  keys.set(db, key);
}

/**
 * Forget `db`'s key: the device locked while the store stayed open.
 * @param {object} db
 */
export function detachKey(db) {
  keys.delete(db);
}

/**
 * @param {object} db
 * @returns {CryptoKey}
 */
export function keyOf(db) {
  const key = keys.get(db);
  if (!key) throw new LockedError();
  return key;
}

/**
 * A fresh data key: the raw bytes (for the caller to wrap into key slots, then drop) and
 * the non-extractable key used from then on.
 * @returns {Promise<{raw: Uint8Array, key: CryptoKey}>}
 */
export async function newDataKey() {
  const raw = crypto.getRandomValues(new Uint8Array(KEY_BITS / 8));
  return { raw, key: await importDataKey(raw) };
}

/**
 * @param {Uint8Array} raw
 * @returns {Promise<CryptoKey>} non-extractable: page scripts may use it, never read it
 */
export function importDataKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/**
 * Encrypt bytes; the result is the IV followed by the ciphertext and its tag.
 * @param {CryptoKey} key
 * @param {string} context what the bytes are and whose (store, id): a ciphertext moved to
 *   another record fails to decrypt instead of showing one patient's data as another's
 * @param {Uint8Array} plain
 * @returns {Promise<Uint8Array>}
 */
export async function encryptBytes(key, context, plain) {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: encoder.encode(context) }, key, plain);
  const out = new Uint8Array(IV_BYTES + sealed.byteLength);
  out.set(iv);
  out.set(new Uint8Array(sealed), IV_BYTES);
  return out;
}

/**
 * @param {CryptoKey} key
 * @param {string} context the same context it was encrypted with
 * @param {Uint8Array|ArrayBuffer} bytes
 * @returns {Promise<Uint8Array>}
 */
export async function decryptBytes(key, context, bytes) {
  const all = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const plain = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: all.subarray(0, IV_BYTES), additionalData: encoder.encode(context) },
    key, all.subarray(IV_BYTES));
  return new Uint8Array(plain);
}

/**
 * @param {CryptoKey} key
 * @param {string} context
 * @param {any} value anything JSON can hold
 */
export function encryptJSON(key, context, value) {
  return encryptBytes(key, context, encoder.encode(JSON.stringify(value)));
}

/** The most IVs one getRandomValues call may fill (it takes at most 65,536 bytes). */
const IVS_PER_DRAW = Math.floor(65536 / IV_BYTES);

/**
 * Encrypt many values at once, each as encryptJSON would, under its own context and fresh
 * IV. A first sync encrypts 100,000 records and more: drawing their IVs together and
 * encoding each into one reused buffer (WebCrypto copies its inputs when called) spares
 * three allocations and a call into the random source per record.
 * @param {CryptoKey} key
 * @param {string[]} contexts
 * @param {any[]} values as many as contexts
 * @returns {Promise<Uint8Array[]>} what encryptJSON gives for each
 */
export function encryptJSONAll(key, contexts, values) {
  let ivs = new Uint8Array(0);
  let scratch = new Uint8Array(4096);
  /** @param {string} text @returns {Uint8Array} a view valid until the next call */
  const encodeTo = (text) => {
    // UTF-16 to UTF-8 takes at most three bytes per code unit.
    if (scratch.length < text.length * 3) scratch = new Uint8Array(text.length * 3 + 1024);
    return scratch.subarray(0, /** @type {number} */ (encoder.encodeInto(text, scratch).written));
  };
  return Promise.all(values.map((value, i) => {
    const at = i % IVS_PER_DRAW;
    if (at === 0) ivs = crypto.getRandomValues(new Uint8Array(Math.min(IVS_PER_DRAW, values.length - i) * IV_BYTES));
    const iv = ivs.subarray(at * IV_BYTES, (at + 1) * IV_BYTES);
    const additionalData = encoder.encode(contexts[i]);
    const sealed = crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData }, key, encodeTo(JSON.stringify(value) ?? ""));
    return sealed.then((bytes) => {
      const out = new Uint8Array(IV_BYTES + bytes.byteLength);
      out.set(iv);
      out.set(new Uint8Array(bytes), IV_BYTES);
      return out;
    });
  }));
}

/**
 * @param {CryptoKey} key
 * @param {string} context
 * @param {Uint8Array|ArrayBuffer} bytes
 */
export async function decryptJSON(key, context, bytes) {
  return JSON.parse(decoder.decode(await decryptBytes(key, context, bytes)));
}
