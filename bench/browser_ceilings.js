// In-page code for bench/initial_sync.py and bench/offline_speed.py, added to the peer's page
// (peers/browser/bench.html, served by pouchdb-server with PouchDB loaded), so the peer and
// the ceilings run in the same Chromium, on the same origin as the peer's own benchmark.
//
//  - ceilings: what IndexedDB (and WebCrypto) can do with exactly the rows the app pulls, in
//    the shape the app stores them (object store `rows`, key [entity, id], index
//    `patient_id`; the record AES-GCM-encrypted under a 256-bit key, with the
//    same additional data as static/idb/vault.js), without the app's per-row version check,
//    HTTP, cursor, telemetry or rendering;
//  - the peer doing the offline reads with PouchDB: a chart (one patient's documents by key
//    range) and a search (all patient documents, filtered as the app's worker filters).
'use strict';

const enc = new TextEncoder();
const dec = new TextDecoder();

function ask(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}
function txDone(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error('abort'));
  });
}
function openRows(name) {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(name, 1);
    req.onupgradeneeded = () => {
      const rows = req.result.createObjectStore('rows', { keyPath: ['entity', 'id'] });
      rows.createIndex('patient_id', 'patient_id');
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
function deleteDb(name) {
  return new Promise((resolve) => {
    const r = indexedDB.deleteDatabase(name);
    r.onsuccess = r.onerror = r.onblocked = () => resolve();
  });
}
const pidOf = (c) => (c.entity === 'patient' ? c.id : (c.record && typeof c.record.patient_id === 'string' ? c.record.patient_id : null));
const rowContext = (entity, id) => `row\u0000${entity}\u0000${id}`;

async function encryptJSON(key, context, value) {          // static/idb/vault.js
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: enc.encode(context) },
    key, enc.encode(JSON.stringify(value)));
  const out = new Uint8Array(12 + sealed.byteLength);
  out.set(iv);
  out.set(new Uint8Array(sealed), 12);
  return out.buffer;  // stored bare, as static/idb/vault.js stores it: cheaper to clone
}
async function decryptJSON(key, context, bytes) {
  if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
  const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: bytes.subarray(0, 12), additionalData: enc.encode(context) },
    key, bytes.subarray(12));
  return JSON.parse(dec.decode(plain));
}
const newKey = () => crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);

// The pulled pages, as the JSON text of each page's `changes` (untimed).
window.benchSetPages = function (text) {
  window.benchPages = JSON.parse(text);
  return window.benchPages.length;
};

async function rowsOf(changes, key) {
  return Promise.all(changes.map(async (c) => {
    const row = { entity: c.entity, id: c.id, version: c.version || 0, patient_id: pidOf(c) };
    if (key) row.secret = await encryptJSON(key, rowContext(c.entity, c.id), c.record);
    else row.record = c.record;
    return row;
  }));
}

// Ceiling of the first sync on the device: each page's JSON parsed, its rows (encrypted or
// not) put in one transaction per page. Returns ms and the rows counted afterwards.
// mode 'put': every put issued at once, the transaction awaited once;
// mode 'get_put': per row, the held row read and then the row put, each awaited before the
// next (what static/idb/rows.js::putRowIn does for its version check), in one transaction.
window.storeCeiling = async function (encrypt, durability, mode = 'put') {
  const name = `ceil_${encrypt ? 'enc' : 'plain'}_${mode}_${Date.now()}`;
  const db = await openRows(name);
  const key = encrypt ? await newKey() : null;
  const t0 = performance.now();
  for (const text of window.benchPages) {
    const rows = await rowsOf(JSON.parse(text), key);
    const tx = db.transaction('rows', 'readwrite', { durability });
    const store = tx.objectStore('rows');
    if (mode === 'get_put') {
      const done = txDone(tx);
      for (const row of rows) {
        const old = await ask(store.get([row.entity, row.id]));
        if (old === undefined || old.version < row.version) await ask(store.put(row));
      }
      await done;
    } else {
      for (const row of rows) store.put(row);
      await txDone(tx);
    }
  }
  const ms = performance.now() - t0;
  const count = await ask(db.transaction('rows').objectStore('rows').count());
  db.close();
  await deleteDb(name);
  return { ms, count };
};

// ---- offline reads: ceilings -------------------------------------------------------------

const held = {};  // variant ('plain' | 'encrypted') -> {db, key, name}

// A store filled with every pulled row, in the app's shape (untimed).
window.readCeilingOpen = async function (variant) {
  const encrypt = variant === 'encrypted';
  const name = `ceil_read_${variant}_${Date.now()}`;
  const h = held[variant] = { name, encrypt, key: encrypt ? await newKey() : null, db: await openRows(name) };
  for (const text of window.benchPages) {
    const rows = await rowsOf(JSON.parse(text), h.key);
    const tx = h.db.transaction('rows', 'readwrite');
    for (const row of rows) tx.objectStore('rows').put(row);
    await txDone(tx);
  }
  return ask(h.db.transaction('rows').objectStore('rows').count());
};

async function openRecords(h, rows) {
  if (!h.encrypt) return rows.map((r) => r.record);
  return Promise.all(rows.map((r) => decryptJSON(h.key, rowContext(r.entity, r.id), r.secret)));
}

// "After a restart": the connection closed and opened again (the key stays in memory, as
// the app's pages hand it back to a restarted worker).
async function reopen(h, cold) {
  if (!cold) return;
  h.db.close();
  h.db = await openRows(h.name);
}

// One patient's rows by the patient_id index, opened: what a chart needs from the store.
window.chartCeiling = async function (variant, patientId, cold) {
  const h = held[variant];
  const t0 = performance.now();
  await reopen(h, cold);
  const rows = await ask(h.db.transaction('rows').objectStore('rows').index('patient_id').getAll(patientId));
  const records = await openRecords(h, rows);
  return { ms: performance.now() - t0, rows: records.length };
};

// app/contexts/search.py::search_patients, as static/sw/contexts.js has it.
function normalisePhone(phone) {
  return String(phone || '').replace(/\D/g, '').slice(-9);
}
function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  return a < b ? -1 : 1;
}
function searchPatients(patients, q, limit = 25) {
  const tokens = q.toLowerCase().split(/\s+/).filter(Boolean);
  if (!tokens.length) return [];
  const digits = normalisePhone(q);
  const matches = patients.filter((p) => tokens.every((token) => {
    if ((p.given_name || '').toLowerCase().includes(token)) return true;
    if ((p.family_name || '').toLowerCase().includes(token)) return true;
    if ((p.identifiers || []).some((i) => String(i.value).toLowerCase().startsWith(token))) return true;
    return digits.length >= 4 && /^\d+$/.test(token.replace(/[+-]/g, ''))
      && String(p.phone || '').replace(/ /g, '').includes(digits);
  }));
  matches.sort((a, b) => compare(a.family_name, b.family_name) || compare(a.given_name, b.given_name));
  return matches.slice(0, limit);
}

// Every patient row by its key range (static/idb/rows.js entityRange), opened and filtered:
// what a search needs.
window.searchCeiling = async function (variant, q, cold) {
  const h = held[variant];
  const t0 = performance.now();
  await reopen(h, cold);
  const rows = await ask(h.db.transaction('rows').objectStore('rows').getAll(IDBKeyRange.bound(['patient'], ['patient', []])));
  const found = searchPatients(await openRecords(h, rows), q);
  return { ms: performance.now() - t0, results: found.length, scanned: rows.length };
};

// ---- offline reads: the peer (PouchDB) -----------------------------------------------------
// Documents: `patient/<id>` for patients, `rec/<patient id>/<entity>/<id>` for the rest, the
// app's record under `record` (bench/offline_speed.py seeds them with peers/pouch_seed.js).

const peer = { db: null, name: null, adapter: null };

window.peerReplicate = async function (remoteUrl, adapter) {
  peer.name = `clinic_local_${adapter}_${Date.now()}`;
  peer.adapter = adapter;
  peer.db = new PouchDB(peer.name, { adapter });
  await peer.db.info();
  const t0 = performance.now();
  const res = await PouchDB.replicate(new PouchDB(remoteUrl), peer.db, {});
  const ms = performance.now() - t0;
  const info = await peer.db.info();
  return { ms, docs_written: res.docs_written, doc_count: info.doc_count, adapter: peer.db.adapter };
};

async function peerReopen(cold) {
  if (!cold) return;
  await peer.db.close();
  peer.db = new PouchDB(peer.name, { adapter: peer.adapter });
}

window.peerChart = async function (patientId, cold) {
  const t0 = performance.now();
  await peerReopen(cold);
  const [patient, rest] = await Promise.all([
    peer.db.get(`patient/${patientId}`),
    peer.db.allDocs({ startkey: `rec/${patientId}/`, endkey: `rec/${patientId}/\ufff0`, include_docs: true }),
  ]);
  const records = [patient.record, ...rest.rows.map((r) => r.doc.record)];
  return { ms: performance.now() - t0, rows: records.length };
};

window.peerSearch = async function (q, cold) {
  const t0 = performance.now();
  await peerReopen(cold);
  const all = await peer.db.allDocs({ startkey: 'patient/', endkey: 'patient/\ufff0', include_docs: true });
  const found = searchPatients(all.rows.map((r) => r.doc.record), q);
  return { ms: performance.now() - t0, results: found.length, scanned: all.rows.length };
};

window.benchCeilingsReady = true;
