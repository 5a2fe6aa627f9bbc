#!/usr/bin/env node
// The peer's side of bench/peak.py: every device a PouchDB client (memory adapter: the device's
// own store is not what is measured, as the app's load generator keeps none) of its clinic's
// database on pouchdb-server. Untimed: each clinic database is filled with the clinic's
// patients, visits and readings, and every device replicates it once (its first sync). Then
// "ready" is printed and all devices start at once: for each of its batches a device writes the
// documents locally (new observations; a patient edit is a change of the patient document it
// holds), replicates one-shot to the server (the push) and one-shot from it (the pull).
// One JSON line at the end: every push's and pull's seconds, documents written and read,
// requests, errors by kind, the client's own CPU.
//
// Usage: node pouch_peak.js --server URL --plan plan.json --prefix r1 [--server-pid PID]
'use strict';
const fs = require('fs');
const PouchDB = require('pouchdb');
PouchDB.plugin(require('pouchdb-adapter-memory'));

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const server = arg('server');
const plan = JSON.parse(fs.readFileSync(arg('plan'), 'utf8'));
const prefix = arg('prefix', 'r1');

let requests = 0;
const countingFetch = (url, opts) => { requests++; return PouchDB.fetch(url, opts); };

async function limited(items, n, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) { const i = next++; await fn(items[i], i); }
  }));
}

async function main() {
  const remotes = {};
  for (const [name, docs] of Object.entries(plan.clinics)) {
    const remote = new PouchDB(`${server}/${prefix}_${name}`, { fetch: countingFetch });
    for (let i = 0; i < docs.length; i += 500) {
      const res = await remote.bulkDocs(docs.slice(i, i + 500));
      if (res.some(r => r.error)) throw new Error('seeding the clinic database failed');
    }
    remotes[name] = remote;
  }
  const devices = plan.devices.map((d, i) => ({ ...d, local: new PouchDB(`${prefix}_dev_${i}`, { adapter: 'memory' }) }));
  await limited(devices, 16, async (d) => {
    const r = await PouchDB.replicate(remotes[d.db], d.local, { batch_size: 500 });
    if (!r.ok) throw new Error('first sync failed');
  });

  const pushS = [], pullS = [], errorKinds = {};
  let docsWritten = 0, docsRead = 0, errors = 0;
  const fail = (what, e) => { errors++; const k = `${what}: ${e && (e.status || e.name || e.message) || e}`; errorKinds[k] = (errorKinds[k] || 0) + 1; };
  process.stdout.write('ready\n');
  requests = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(devices.map(async (d) => {
    for (const batch of d.batches) {
      const docs = [];
      for (const doc of batch) {
        if (doc.edit) {
          const held = await d.local.get(doc.edit);
          const { edit, ...fields } = doc;
          docs.push({ ...held, ...fields });
        } else docs.push(doc);
      }
      const res = await d.local.bulkDocs(docs);
      if (res.some(r => r.error)) { fail('local write', res.find(r => r.error)); continue; }
      let t = process.hrtime.bigint();
      try {
        const r = await PouchDB.replicate(d.local, remotes[d.db], { batch_size: 100 });
        pushS.push(Number(process.hrtime.bigint() - t) / 1e9);
        docsWritten += r.docs_written;
        if (!r.ok || r.doc_write_failures) fail('push', { message: `${r.doc_write_failures} write failures` });
      } catch (e) { fail('push', e); continue; }
      t = process.hrtime.bigint();
      try {
        const r = await PouchDB.replicate(remotes[d.db], d.local, { batch_size: 500 });
        pullS.push(Number(process.hrtime.bigint() - t) / 1e9);
        docsRead += r.docs_written;
        if (!r.ok) fail('pull', { message: 'not ok' });
      } catch (e) { fail('pull', e); }
    }
  }));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const expected = devices.reduce((n, d) => n + d.batches.reduce((m, b) => m + b.length, 0), 0);
  console.log(JSON.stringify({
    bench: 'pouchdb_peak', devices: devices.length, seconds, push_s: pushS, pull_s: pullS,
    docs_written: docsWritten, expected, docs_read: docsRead, http_requests: requests, errors,
    error_kinds: errorKinds, client_cpu_s: (cpu.user + cpu.system) / 1e6,
    ok: errors === 0 && docsWritten === expected,
  }));
}
main().catch(e => { console.error(e); process.exit(1); });
