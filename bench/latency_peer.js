// The peer's side of the latency benchmark, added to the peer's page (served by
// pouchdb-server): a local PouchDB filled from the clinic's documents, then kept in live
// two-way sync with the server, as a PouchDB app on a tablet would be. One page puts an
// observation; the other's live changes feed writes its value into a table cell.
window.peerLive = (() => {
  let local = null;
  return {
    async open(remoteUrl, name) {
      const remote = new PouchDB(remoteUrl);
      local = new PouchDB(name);
      const filled = await PouchDB.replicate(remote, local);
      local.sync(remote, { live: true, retry: true });
      const table = document.createElement("table");
      table.innerHTML = '<tr data-code="peer"><td class="value">-</td></tr>';
      document.body.append(table);
      local.changes({ since: "now", live: true, include_docs: true }).on("change", (change) => {
        const doc = change.doc;
        if (doc && doc.type === "observation") table.querySelector("td.value").textContent = String(doc.record.value);
      });
      return { docs: (await local.info()).doc_count, written: filled.docs_written };
    },
    async put(doc) {
      const t = performance.timeOrigin + performance.now();
      await local.put(doc);
      return t;
    },
  };
})();
