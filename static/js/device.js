// @ts-check
// The page's side of the offline app: installs the service worker, tells it who is signed in,
// relays the server's live pokes and the browser's connectivity to it, and shows its state:
// the sync badge, the first sync's progress, storage, and a warning before signing out with
// changes not yet sent.

const worker = navigator.serviceWorker;
const userId = document.querySelector('meta[name="clinic-user"]')?.getAttribute("content") || "";
/** @type {any} */
let lastStatus = null;
/** This person's data key, non-extractable: kept only to hand back to a restarted worker
 * (a stopped worker loses it; DESIGN.md §6). Gone with the page. */
let dataKey = null;
/** The worker said this device is not set up for this person yet: offer it. */
let setupWanted = false;

function send(message) {
  if (worker && worker.controller) worker.controller.postMessage(message);
  else if (worker) worker.ready.then((registration) => registration.active && registration.active.postMessage(message));
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function showStatus(status) {
  lastStatus = status;
  // On the root element, which survives boosted navigations: tests and styles read them.
  document.documentElement.dataset.syncState = status.state;
  document.documentElement.dataset.offlineReady = status.initial && status.initial.done ? "yes" : "no";
  const badge = document.getElementById("sync-badge");
  if (badge) {
    const words = {
      synced: "Synced",
      pending: `${plural(status.pending, "change", "changes")} to send`,
      offline: status.pending ? `Offline · ${plural(status.pending, "change", "changes")} kept here` : "Offline",
      attention: status.needs_sign_in ? "Sign in again to send changes" : `${plural(status.quarantined, "change needs", "changes need")} attention`,
    };
    badge.dataset.state = status.state;
    badge.textContent = words[status.state] || "";
    badge.hidden = false;
    const storage = status.storage || {};
    const parts = [];
    if (status.last_synced_at) parts.push(`Last synced ${new Date(status.last_synced_at).toLocaleTimeString()}`);
    if (storage.used != null && storage.quota) parts.push(`Storage ${Math.round(storage.used / 1048576)} MB of ${Math.round(storage.quota / 1048576)} MB`);
    if (storage.persisted === false) parts.push("Storage is not persistent: the browser may clear it when space runs low");
    badge.title = parts.join(" · ");
  }
  const progress = document.getElementById("initial-sync");
  if (progress) {
    const initial = status.initial;
    const running = initial && !initial.done;
    progress.hidden = !running;
    if (running) {
      const bar = progress.querySelector("progress");
      const label = progress.querySelector("[data-progress-label]");
      const estimate = initial.estimate || 0;
      if (bar) {
        if (estimate) {
          bar.max = estimate;
          bar.value = Math.min(initial.received || 0, estimate);
        } else bar.removeAttribute("value");
      }
      if (label && setupWanted) {
        label.textContent = "This device is not set up to work offline for you yet. ";
        const link = document.createElement("a");
        link.href = `/device/unlock?next=${encodeURIComponent(location.pathname + location.search)}`;
        link.textContent = "Set it up";
        label.append(link);
      } else if (label) {
        label.textContent = estimate
          ? `Preparing this device to work offline: ${Math.min(initial.received || 0, estimate).toLocaleString()} of about ${estimate.toLocaleString()} records.`
          : `Preparing this device to work offline: ${(initial.received || 0).toLocaleString()} records so far.`;
      }
    }
  }
  if (status.changed) document.body.dispatchEvent(new CustomEvent("clinic:changed"));
}

async function askForPersistentStorage() {
  // Asked once per sign-in: a refusal is shown on the badge and in the device page.
  if (!navigator.storage || !navigator.storage.persist || !userId) return;
  const asked = `persist-asked:${userId}`;
  if (sessionStorage.getItem(asked)) return;
  sessionStorage.setItem(asked, "1");
  if (!(await navigator.storage.persisted())) await navigator.storage.persist();
}

function listenForPokes() {
  if (!userId || typeof EventSource === "undefined") return;
  const source = new EventSource("/sync/v1/events");
  source.addEventListener("ready", () => send({ type: "poke" }));
  source.addEventListener("poke", () => send({ type: "poke" }));
}

/** Asked before anything else sees the submit (htmx included), so "Cancel" really cancels. */
function guardSignOut(event) {
  const form = /** @type {HTMLFormElement} */ (event.target);
  if (!(form instanceof HTMLFormElement) || form.getAttribute("action") !== "/logout") return;
  const count = lastStatus ? lastStatus.pending : 0;
  if (!count) return;
  const message = `${plural(count, "change has", "changes have")} not been sent to the server yet. ` +
    "They stay on this device and are sent the next time you sign in here. Sign out anyway?";
  if (!window.confirm(message)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}

/** The worker hears of taps and keys at most this often: it only needs the minute. */
const ACTIVITY_EVERY_MS = 15_000;
let activitySentAt = 0;

/** The person is using the page: the device's idle lock starts counting again. */
function noteActivity() {
  if (!userId || Date.now() - activitySentAt < ACTIVITY_EVERY_MS) return;
  activitySentAt = Date.now();
  send({ type: "activity", user_id: userId });
}

/** How long a first sign-in on this device waits for the worker to be ready. */
const WORKER_WAIT_MS = 8000;

/**
 * A first sign-in on a device waits, briefly, for the worker to take over the page: the
 * worker keeps the password the server accepts to encrypt this person's records here, so
 * they are not asked for it again straight after signing in.
 */
function waitForWorkerBeforeSignIn(event) {
  const form = /** @type {HTMLFormElement} */ (event.target);
  if (!(form instanceof HTMLFormElement) || form.getAttribute("action") !== "/login") return;
  if (!worker || worker.controller || form.dataset.workerWaited) return;
  event.preventDefault();
  event.stopImmediatePropagation();
  form.dataset.workerWaited = "yes";
  const button = form.querySelector("button[type=submit]");
  if (button) button.textContent = "Preparing this device…";
  let sent = false;
  const go = () => {
    if (sent) return;
    sent = true;
    form.requestSubmit();
  };
  const timer = setTimeout(go, WORKER_WAIT_MS);
  worker.addEventListener("controllerchange", () => { clearTimeout(timer); go(); }, { once: true });
}

if (worker) {
  worker.addEventListener("message", (event) => {
    const data = event.data || {};
    if (data.type === "status") showStatus(data.status);
    else if (data.type === "data-key" && data.user_id === userId) dataKey = data.key;
    else if (data.type === "lock") dataKey = null;
    else if (data.type === "setup-wanted") {
      setupWanted = true;
      if (lastStatus) showStatus({ ...lastStatus, changed: false });
    } else if (data.type === "unlock-needed" && location.pathname !== "/device/unlock") {
      location.assign(`/device/unlock?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    else if (data.type === "key-wanted" && event.source) {
      // Answered either way: the worker waits for every page, and stops waiting once all of
      // them have said they have no key.
      /** @type {ServiceWorker} */ (event.source).postMessage(dataKey && data.user_id === userId
        ? { type: "data-key", user_id: userId, key: dataKey } : { type: "no-key", user_id: data.user_id });
    }
  });
  worker.register("/sw.js", { type: "module", scope: "/" }).then(() => {
    send({ type: "hello", user_id: userId });
    send({ type: "status" });
  }).catch((error) => console.error("service worker not installed", error));
  window.addEventListener("online", () => send({ type: "online" }));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") send({ type: "sync" });
  });
  setInterval(() => {
    send({ type: "sync" });
    // A page left open: the worker says when the idle lock has come, and the page goes to it.
    if (userId) send({ type: "idle-check", user_id: userId });
  }, 30_000);
  for (const type of ["pointerdown", "keydown", "wheel", "touchstart"]) {
    document.addEventListener(type, noteActivity, { capture: true, passive: true });
  }
  document.addEventListener("submit", guardSignOut, true);
  document.addEventListener("submit", waitForWorkerBeforeSignIn, true);
  document.addEventListener("DOMContentLoaded", () => {
    listenForPokes();
    askForPersistentStorage().finally(() => send({ type: "status" }));
  });
  // A boosted navigation swaps the body, badge included: show the last state on the new one.
  document.addEventListener("htmx:afterSettle", () => lastStatus && showStatus({ ...lastStatus, changed: false }));
}
