#!/usr/bin/env node
// The peer's side of bench/push.py: a Node PouchDB client replicating one-shot to
// pouchdb-server with a given batch_size, timed like the shared peers/pouch_push.js
// (fresh client and target databases per repetition, filled outside the timed section,
// server CPU read from /proc). Two kinds of work:
//
//   --kind obs     the observation documents of --data are new on the client and pushed;
//   --kind update  the patient documents of --data are on both sides already (replicated
//                  untimed), each is edited once on the client (a new phone), and the edits
//                  are pushed: the peer's equivalent of N patient.update mutations.
//
// One JSON line per repetition on stdout, in the shape of the shared peer scripts.
// Usage: node pouch_batches.js --server URL --data file.json --workdir DIR --kind obs|update
//                              --batch B [--reps 1] [--server-pid PID] [--adapter leveldb|memory]
'use strict';
const fs = require('fs');
const path = require('path');
const PouchDB = require('pouchdb');
PouchDB.plugin(require('pouchdb-adapter-memory'));

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const server = arg('server');
const dataPath = arg('data');
const workdir = arg('workdir');
const kind = arg('kind', 'obs');
const batch = parseInt(arg('batch', '100'), 10);
const reps = parseInt(arg('reps', '1'), 10);
const adapter = arg('adapter', 'leveldb');
const serverPid = arg('server-pid');
if (!server || !dataPath || !workdir || !['obs', 'update'].includes(kind)) {
  console.error('usage: pouch_batches.js --server URL --data file.json --workdir DIR --kind obs|update --batch B');
  process.exit(2);
}

function procCpuSeconds(pid) {   // same method as peers/pouch_push.js
  if (!pid) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch (e) { return null; }
}

async function fill(db, docs) {
  for (let i = 0; i < docs.length; i += 1000) {
    const res = await db.bulkDocs(docs.slice(i, i + 1000));
    if (res.some(r => r.error)) throw new Error('bulkDocs failed');
  }
}

async function main() {
  const rows = JSON.parse(fs.readFileSync(dataPath, 'utf8'));
  const type = kind === 'obs' ? 'observation' : 'patient';
  const docs = rows.map(({ id, ...rest }) => ({ _id: id, type, ...rest }));
  const n = docs.length;
  fs.mkdirSync(workdir, { recursive: true });
  const stamp = Date.now().toString(36) + process.pid.toString(36);
  for (let rep = 1; rep <= reps; rep++) {
    const localName = adapter === 'memory' ? `b_${stamp}_${rep}`
      : path.join(workdir, `client_${kind}_${batch}_${stamp}_${rep}`);
    const local = new PouchDB(localName, { adapter });
    await fill(local, docs);
    let requests = 0;
    const countingFetch = (url, opts) => { requests++; return PouchDB.fetch(url, opts); };
    const target = new PouchDB(`${server}/b_${kind}_${batch}_${stamp}_${rep}`, { fetch: countingFetch });
    await target.info();
    if (kind === 'update') {
      // Both sides hold every patient; then each one gets one edit on the client.
      const first = await PouchDB.replicate(local, target, { batch_size: 500 });
      if (!first.ok || first.docs_written !== n) throw new Error('initial replication failed');
      const all = await local.allDocs({ include_docs: true });
      const edited = all.rows.map((r, i) => ({ ...r.doc, phone: `+254 711 ${String(i).padStart(6, '0')}` }));
      await fill(local, edited);
    }
    requests = 0;
    const srv0 = procCpuSeconds(serverPid);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const result = await PouchDB.replicate(local, target, { batch_size: batch });
    const t1 = process.hrtime.bigint();
    const cpu1 = process.cpuUsage(cpu0);
    const srv1 = procCpuSeconds(serverPid);
    const seconds = Number(t1 - t0) / 1e9;
    const info = await target.info();
    const ok = result.ok && result.docs_written === n && info.doc_count === n;
    console.log(JSON.stringify({
      bench: 'pouchdb_push_batches', variant: `${kind} batch_size ${batch} (${adapter} client)`,
      rep, n, seconds, rate: n / seconds, ok, docs_written: result.docs_written,
      target_doc_count: info.doc_count, http_requests: requests,
      client_cpu_s: (cpu1.user + cpu1.system) / 1e6,
      server_cpu_s: srv0 === null || srv1 === null ? null : srv1 - srv0,
    }));
    if (!ok) process.exitCode = 1;
    await local.destroy();
    await target.destroy();
  }
}
main().catch(e => { console.error(e); process.exit(1); });
