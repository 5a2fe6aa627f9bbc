// @ts-check
// Page behaviour that templates cannot express: CSRF on htmx requests, the clinic
// switcher, the signature pad and the device's time zone on appointment forms.
// Kept free of inline handlers so a strict Content-Security-Policy can forbid them.

// A form answers 409/422 with the page showing what to correct, and a navigation that fails
// answers with a page saying what happened: show both. A failing poll or search keeps what
// the person already sees instead of replacing it with an error page.
document.addEventListener("htmx:beforeSwap", (event) => {
  const detail = /** @type {CustomEvent} */ (event).detail;
  const status = detail.xhr.status;
  if (status === 409 || status === 422 || (detail.boosted && status >= 400)) {
    detail.shouldSwap = true;
    detail.isError = false;
  }
});

/** A field the person has typed into or changed and not sent yet. */
function edited(field) {
  if (field instanceof HTMLInputElement && (field.type === "checkbox" || field.type === "radio")) {
    return field.checked !== field.defaultChecked;
  }
  if (field instanceof HTMLSelectElement) {
    // With no option marked selected, a single select starts at its first one.
    const options = [...field.options];
    const marked = options.some((o) => o.defaultSelected);
    return options.some((o, i) => o.selected !== (marked ? o.defaultSelected : i === 0 && !field.multiple));
  }
  if (field instanceof HTMLInputElement || field instanceof HTMLTextAreaElement) return field.value !== field.defaultValue;
  return false;
}

// A chart refreshes itself when another device changes the clinic's records; it waits while
// someone is filling in one of its forms rather than throw their input away. Their own send
// shows the page afresh, and the next change after that refreshes it again.
document.addEventListener("htmx:beforeRequest", (event) => {
  const detail = /** @type {CustomEvent} */ (event).detail;
  const cause = detail.requestConfig && detail.requestConfig.triggeringEvent;
  if (!cause || cause.type !== "clinic:changed") return;
  const region = /** @type {Element} */ (detail.elt);
  if ([...region.querySelectorAll("input, select, textarea")].some(edited)) event.preventDefault();
});

document.addEventListener("htmx:configRequest", (event) => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) /** @type {CustomEvent} */ (event).detail.headers["X-CSRFToken"] = meta.getAttribute("content");
});

function enhance(root) {
  root.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form && select.form.requestSubmit());
  });
  root.querySelectorAll("input[data-tz-offset]").forEach((input) => {
    const minutes = -new Date().getTimezoneOffset();
    const sign = minutes >= 0 ? "+" : "-";
    const abs = Math.abs(minutes);
    input.value = `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
  });
  root.querySelectorAll("canvas[data-signature-for]").forEach(setUpSignaturePad);
}

/** Draws with a finger, stylus or mouse; the PNG goes into the hidden field on each stroke. */
function setUpSignaturePad(canvas) {
  const target = document.getElementById(canvas.dataset.signatureFor);
  const ctx = canvas.getContext("2d");
  if (!target || !ctx) return;
  ctx.lineWidth = 3;
  ctx.lineCap = "round";
  ctx.strokeStyle = "#1b2a3a";
  let drawing = false;
  const point = (e) => {
    const box = canvas.getBoundingClientRect();
    return [(e.clientX - box.left) * (canvas.width / box.width), (e.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true;
    canvas.setPointerCapture(e.pointerId);
    ctx.beginPath();
    ctx.moveTo(...point(e));
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...point(e));
    ctx.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    target.value = canvas.toDataURL("image/png");
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  const clear = document.querySelector(`[data-signature-clear="${canvas.id}"]`);
  if (clear) clear.addEventListener("click", () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    target.value = "";
  });
}

document.addEventListener("DOMContentLoaded", () => enhance(document));
document.addEventListener("htmx:load", (event) => enhance(/** @type {CustomEvent} */ (event).detail.elt));
