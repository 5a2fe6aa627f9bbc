// @ts-check
// Twins of the form handlers in app/web/patients.py and app/web/clinical.py: the same form
// fields become the same mutations, here queued in the outbox instead of applied. Mutation ids
// derive from the page's `mid` token exactly as app/web/submit.py::form_mid does, so sending a
// form twice queues it once.

import { derivedId, isUuid, newId } from "./ids.js";
import { validate, errorsOf } from "./validate.js";
import { normalisePhone, openVisitId, ofEntity, patientSummary } from "./contexts.js";

/** app/web/forms.py::text */
export function text(form, name) {
  const value = String(form.get(name) ?? "").trim();
  return value || null;
}

/** app/web/forms.py::pick */
export function pick(form, names, required = []) {
  const data = {};
  for (const name of names) {
    const value = text(form, name);
    if (value !== null || required.includes(name)) data[name] = value ?? "";
  }
  return data;
}

/** app/web/forms.py::number and ::integer: a value that is not a number goes to the schema. */
export function number(form, name) {
  const value = text(form, name);
  if (value === null) return null;
  const parsed = Number(value);
  return value.trim() !== "" && Number.isFinite(parsed) ? parsed : value;
}

export function integer(form, name) {
  const value = text(form, name);
  if (value === null) return null;
  return /^[+-]?\d+$/.test(value) ? parseInt(value, 10) : value;
}

// Browsers read a backslash as a slash and drop tabs and newlines: see app/web/redirects.py.
const LOCAL_PATH = /^\/(?![/\\])[^\\\x00-\x20\x7f]*$/;

/** app/web/redirects.py::local_path */
export function localPath(target, fallback = "/") {
  return typeof target === "string" && LOCAL_PATH.test(target) ? target : fallback;
}

/** app/web/submit.py::form_mid */
export async function formMid(form, path, name = "") {
  let token = String(form.get("mid") || "");
  if (!isUuid(token)) token = newId();
  return derivedId(token, `${path}#${name}`);
}

/**
 * A mutation as the outbox takes it, checked against its schema first.
 * @returns {{mutation: any, problems: {field: string, message: string}[]}}
 */
export function build(session, type, entity, entityId, data, extra = {}) {
  const spec = session.schemas.types[type];
  const problems = spec ? validate(spec.schema, data) : [{ field: "", message: `Unknown change: ${type}.` }];
  const born = "birth_date" in data && !problems.some((p) => p.field === "birth_date") ? birthDateProblem(data.birth_date, extra.today) : null;
  if (born) problems.push({ field: "birth_date", message: born });
  const mutation = {
    type, entity, entity_id: entityId, data, author: session.user_id,
    ...(extra.base !== undefined ? { base: extra.base } : {}),
    ...(extra.base_version !== undefined && extra.base_version !== null ? { base_version: extra.base_version } : {}),
    mid: extra.mid, patient_id: extra.patient_id ?? null,
  };
  return { mutation, problems };
}

export const errorsFrom = errorsOf;

/** A simple duplicate check over this device's patients (the server's likeness is richer). */
export function likelyDuplicates(records, candidate) {
  const family = (candidate.family_name || "").trim().toLowerCase();
  const phone = normalisePhone(candidate.phone);
  const identifiers = new Set((candidate.identifiers || []).map((i) => `${i.system}:${String(i.value).toLowerCase()}`));
  const found = [];
  for (const p of ofEntity(records, "patient")) {
    const reasons = [];
    if (family && (p.family_name || "").toLowerCase() === family && p.birth_date === candidate.birth_date) {
      reasons.push("same family name and date of birth");
    }
    if (phone.length >= 7 && normalisePhone(p.phone) === phone) reasons.push("same phone number");
    if ((p.identifiers || []).some((i) => identifiers.has(`${i.system}:${String(i.value).toLowerCase()}`))) {
      reasons.push("same identifier");
    }
    if (reasons.length) found.push({ ...patientSummary(p), score: Math.min(1, 0.6 + 0.2 * reasons.length), reasons });
  }
  return found.sort((a, b) => b.score - a.score).slice(0, 5);
}

/** Python's format(x, "g"): six significant digits, exponent outside 1e-4 to 1e6. */
export function formatG(x) {
  if (x === 0) return "0";
  if (!Number.isFinite(x)) return String(x).toLowerCase().replace("infinity", "inf");
  const [mantissa, exponent] = x.toExponential(5).split("e");
  const e = Number(exponent);
  const trim = (text) => (text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text);
  if (e < -4 || e >= 6) return `${trim(mantissa)}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  return trim(x.toPrecision(6));
}

/** app/domain/vitals.py::plausibility_problem */
export function plausibilityProblem(vitals, code, value, unit) {
  const vital = vitals.find((v) => v.code === code);
  if (!vital) return null;
  if (unit !== vital.unit) return `${vital.label} is recorded in ${vital.unit}, not ${unit}.`;
  if (typeof value !== "number") return `${vital.label} must be a number.`;
  if (!(vital.min <= value && value <= vital.max)) {
    return `${vital.label} of ${formatG(value)} ${vital.unit} is outside the range this form accepts ` +
      `(${formatG(vital.min)}–${formatG(vital.max)}). Check the reading.`;
  }
  return null;
}

/** app/services/handlers/patients.py::check_birth_date, on the device's idea of today (UTC). */
export function birthDateProblem(value, today) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(String(value || ""))) return null; // the schema's to report
  const now = today || new Date().toISOString().slice(0, 10);
  if (value > now) return "Date of birth is in the future.";
  if (Number(now.slice(0, 4)) - Number(value.slice(0, 4)) > 130) return "Date of birth is more than 130 years ago.";
  return null;
}

/** The vitals form: one observation per reading entered (app/web/clinical.py). */
export async function vitalsMutations(session, records, form, path, patientId, now) {
  const visitId = openVisitId(session, records, patientId);
  const out = [];
  for (const vital of session.vitals) {
    const value = number(form, vital.field);
    if (value === null) continue;
    const data = { patient_id: patientId, code: vital.code, value, unit: vital.unit, effective_at: now };
    if (visitId) data.visit_id = visitId;
    const built = build(session, "observation.record", "observation",
      await formMid(form, path, `id-${vital.code}`), data,
      { mid: await formMid(form, path, vital.code), patient_id: patientId });
    // The server's handler checks the range after the schema; so does this form.
    const implausible = built.problems.length ? null : plausibilityProblem(session.vitals, vital.code, value, vital.unit);
    if (implausible) built.problems.push({ field: "value", message: implausible });
    out.push({ field: vital.field, ...built });
  }
  return out;
}
