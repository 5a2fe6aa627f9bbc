// @ts-check
// A request's deadline as an AbortSignal, built by hand: AbortSignal.timeout and
// AbortSignal.any are missing from the Chrome of older tablets.

/**
 * A signal that aborts after `ms`, or as soon as `also` aborts. `expired` says whether the
 * time ran out; `clear()` stops the clock once the answer is in.
 * @param {number} ms
 * @param {AbortSignal} [also]
 */
export function withDeadline(ms, also) {
  const controller = new AbortController();
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    controller.abort();
  }, ms);
  const relay = () => controller.abort();
  if (also) {
    if (also.aborted) relay();
    else also.addEventListener("abort", relay, { once: true });
  }
  return {
    signal: controller.signal,
    get expired() { return expired; },
    clear() {
      clearTimeout(timer);
      if (also) also.removeEventListener("abort", relay);
    },
  };
}
