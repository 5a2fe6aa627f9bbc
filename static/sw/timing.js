// @ts-check
// Where the worker's time goes while it answers a page: each phase is a performance measure
// (seen in a DevTools trace of the worker) and goes out with the answer as a Server-Timing
// header, which the page and the benchmarks read (bench/offline_speed.py).

export class Timing {
  constructor() {
    this.started = performance.now();
    this.last = this.started;
    /** @type {[string, number][]} */
    this.phases = [];
  }

  /** The phase `name` ends now; it began where the previous one ended. */
  lap(name) {
    const now = performance.now();
    this.phases.push([name, now - this.last]);
    performance.measure(`sw:${name}`, { start: this.last, end: now });
    this.last = now;
  }

  header() {
    const total = performance.now() - this.started;
    // A worker may answer thousands of pages before it stops: its timeline keeps none of them.
    for (const [name] of this.phases) performance.clearMeasures(`sw:${name}`);
    return [...this.phases, ["total", total]].map(([name, ms]) => `${name};dur=${ms.toFixed(1)}`).join(", ");
  }
}
