// @ts-check
// Queued mutations sealed to the server's public key (DESIGN.md §6), beside the copy under
// the person's data key. If the person forgets their secret, or wrong guesses wipe the key
// slots, the device can still hand these to the server, which alone can open them, and the
// queue is not lost.
//
// ECDH on P-256 with a key pair made here, HKDF-SHA256, AES-GCM; the server's twin is
// app/crypto/outbox_escrow.py. The device's private half is never stored: one pair serves a
// store while it is open, and only its public half is kept, in each envelope.

const HKDF_INFO = new TextEncoder().encode("clinic-record outbox escrow v1");
const encoder = new TextEncoder();

/**
 * @typedef {{kty: "EC", crv: "P-256", x: string, y: string, kid: string}} ServerEscrowKey
 * @typedef {{kid: string, epk: string, iv: string, ct: string}} Envelope  base64url fields
 * @typedef {{kid: string, epk: string, key: CryptoKey}} Sealer
 */

/** @type {WeakMap<object, {author: string, kid: string, sealer: Promise<Sealer>}>} */
const escrows = new WeakMap();

/** @param {ArrayBuffer|Uint8Array} bytes */
export function base64url(bytes) {
  const all = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let text = "";
  for (const byte of all) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** @param {ServerEscrowKey} serverKey */
async function newSealer(serverKey) {
  const server = await crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: serverKey.x, y: serverKey.y },
    { name: "ECDH", namedCurve: "P-256" }, false, []);
  const mine = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  const epk = new Uint8Array(await crypto.subtle.exportKey("raw", mine.publicKey));
  const shared = await crypto.subtle.deriveBits({ name: "ECDH", public: server }, mine.privateKey, 256);
  const material = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: epk, info: HKDF_INFO },
    material, { name: "AES-GCM", length: 256 }, false, ["encrypt"]);
  return { kid: serverKey.kid, epk: base64url(epk), key };
}

/**
 * From now on, mutations queued in `db` by `author` are also sealed to `serverKey`.
 * @param {object} db
 * @param {string} author the store's person: an envelope opens on the server only for them
 * @param {ServerEscrowKey|null|undefined} serverKey from /app/session.json; none, none sealed
 */
export function attachEscrow(db, author, serverKey) {
  if (!serverKey || !serverKey.x || !serverKey.kid) return;
  const held = escrows.get(db);
  // Every session refresh attaches again: the same key keeps the pair already made.
  if (held && held.author === author && held.kid === serverKey.kid) return;
  escrows.set(db, { author, kid: serverKey.kid, sealer: newSealer(serverKey) });
}

/**
 * The envelope of what one mutation says, for the server; null when no server key is known.
 * @param {object} db
 * @param {string} mid
 * @param {{data: Record<string, any>, base?: Record<string, any>}} said
 * @returns {Promise<Envelope|null>}
 */
export async function escrowFor(db, mid, said) {
  const held = escrows.get(db);
  return held ? sealWith(await held.sealer, held.author, mid, said) : null;
}

/**
 * @param {Sealer} sealer
 * @param {string} author
 * @param {string} mid
 * @param {any} said
 * @returns {Promise<Envelope>}
 */
async function sealWith(sealer, author, mid, said) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: encoder.encode(`outbox-escrow\u0000${author}\u0000${mid}`) },
    sealer.key, encoder.encode(JSON.stringify(said)));
  return { kid: sealer.kid, epk: sealer.epk, iv: base64url(iv), ct: base64url(ct) };
}

/**
 * One envelope with a key pair of its own (a store seals many with one pair).
 * @param {ServerEscrowKey} serverKey
 * @param {string} author
 * @param {string} mid
 * @param {any} said
 */
export async function sealOnce(serverKey, author, mid, said) {
  return sealWith(await newSealer(serverKey), author, mid, said);
}
