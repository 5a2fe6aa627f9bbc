// Injected before any page script (Playwright init script) into every page of the latency
// benchmark: epoch-millisecond timestamps (performance.timeOrigin + now, comparable across
// the browsers of one machine) of what the benchmark cannot see from outside: form submits,
// SSE pokes, the worker's "changed", and the moment a watched cell shows an expected value
// (the DOM mutation, then the next animation frame).
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const lat = { submits: [], pokes: [], changed: [], want: null };
  window.__latency = lat;

  const Native = window.EventSource;
  if (Native) {
    window.EventSource = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener("poke", () => lat.pokes.push(now()));
      }
    };
  }
  document.addEventListener("submit", () => lat.submits.push(now()), true);
  // Dispatched on <body> without bubbling: a capturing listener on the document still hears it.
  document.addEventListener("clinic:changed", () => lat.changed.push(now()), true);

  function check() {
    const want = lat.want;
    if (!want || want.dom) return;
    const cell = document.querySelector(want.selector);
    const first = cell ? cell.textContent.trim().split(/\s+/)[0] : null;
    if (first === want.text) {
      want.dom = now();
      requestAnimationFrame(() => { want.frame = now(); });
    }
  }
  lat.watch = (selector, text) => {
    lat.want = { selector, text, dom: null, frame: null };
    check();
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, characterData: true });
})();
