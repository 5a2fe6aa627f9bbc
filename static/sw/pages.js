// @ts-check
// The pages the worker answers from the device (DESIGN.md §4, "Addresses and forms"): each
// GET builds its context with a twin of the server's context function and renders the shared
// template; each POST queues mutations and redirects, as the server's handler would. Anything
// not here, or about a patient not on this device, goes to the network.

import { chartContext, fingerprintOf, patientSummary, searchContext, visitContext, worklistContext, openVisitId } from "./contexts.js";
import { build, errorsFrom, formMid, integer, likelyDuplicates, localPath, pick, text, vitalsMutations } from "./forms.js";
import { newId } from "./ids.js";

const UUID = "([0-9a-fA-F-]{36})";
const SERVER_SEARCH_MS = 3000;

/**
 * @typedef {{
 *   request: Request, url: URL, params: string[], session: any, form: FormData|null,
 *   records: (patientId?: string|null) => Promise<Map<string, any>>,
 *   patients: () => Promise<Map<string, any>>,
 *   warmPatients: () => void,
 *   render: (name: string, context: any, options?: {fragment?: string, status?: number}) => Promise<Response>,
 *   redirect: (to: string) => Response,
 *   flash: (category: string, message: string) => void,
 *   queue: (mutations: any[]) => Promise<void>,
 *   notLocal: () => Promise<Response>,
 *   now: () => Promise<string>,
 *   fromServer: (timeoutMs: number) => Promise<Response|null>,
 *   read: (action: string, patientIds: string[], detail?: any) => Promise<void>,
 * }} Ctx
 */

/** @type {[string, RegExp, (ctx: Ctx) => Promise<Response>][]} */
const ROUTES = [
  ["GET", /^\/$/, home],
  ["GET", /^\/worklist\/([a-z]+)$/, worklist],
  ["GET", /^\/patients$/, search],
  ["GET", /^\/patients\/new$/, registrationForm],
  ["POST", /^\/patients\/new$/, register],
  ["GET", new RegExp(`^/patients/${UUID}$`), chart],
  ["GET", new RegExp(`^/patients/${UUID}/edit$`), editForm],
  ["POST", new RegExp(`^/patients/${UUID}/edit$`), edit],
  ["POST", new RegExp(`^/patients/${UUID}/visits$`), startVisit],
  ["GET", new RegExp(`^/visits/${UUID}$`), visitPage],
  ["POST", new RegExp(`^/visits/${UUID}/move$`), moveVisit],
  ["GET", new RegExp(`^/patients/${UUID}/vitals$`), vitalsForm],
  ["POST", new RegExp(`^/patients/${UUID}/vitals$`), recordVitals],
  ["GET", new RegExp(`^/patients/${UUID}/notes$`), noteForm],
  ["POST", new RegExp(`^/patients/${UUID}/notes$`), writeNote],
  ["GET", new RegExp(`^/patients/${UUID}/appointments$`), appointmentForm],
  ["POST", new RegExp(`^/patients/${UUID}/appointments$`), requestAppointment],
];

export function match(method, pathname) {
  for (const [m, pattern, handler] of ROUTES) {
    if (m !== method) continue;
    const found = pattern.exec(pathname);
    if (found) return { handler, params: found.slice(1) };
  }
  return null;
}

const chartOf = (id, anchor = "") => `/patients/${id}${anchor}`;

async function home(ctx) {
  return ctx.redirect(`/worklist/${ctx.session.home_station}`);
}

async function worklist(ctx) {
  const [station] = ctx.params;
  if (!ctx.session.stations.active.includes(station)) return ctx.notLocal();
  const context = await worklistContext(ctx.session, await ctx.records(), station);
  if (ctx.url.searchParams.get("since") === context.fingerprint) return new Response(null, { status: 204 });
  await ctx.read("worklist.read", context.visits.map((v) => v.patient_id), { station });
  return ctx.render("worklist/station.html", { ...context, mid: newId() }, { fragment: "worklist/_visits.html" });
}

async function search(ctx) {
  const q = (ctx.url.searchParams.get("q") || "").trim().slice(0, 100);
  if (!q) ctx.warmPatients(); // the search page opens: a query follows
  const context = searchContext(q ? await ctx.patients() : new Map(), q);
  if (q && !context.results.length) {
    // The device holds the clinic's recent patients only; someone last seen years ago is on
    // the server. Ask it, briefly, before saying there is no such patient (and before someone
    // registers them a second time).
    const remote = await ctx.fromServer(SERVER_SEARCH_MS);
    if (remote) return remote;
  }
  await ctx.read("patient.search", context.results.map((p) => p.id), { q });
  return ctx.render("patients/search.html", context, { fragment: "patients/_results.html" });
}

function registrationContext(ctx, values, errors, duplicates = []) {
  return {
    values, errors, duplicates, sexes: ctx.session.sexes,
    identifier_systems: ctx.session.identifier_systems, mid: newId(),
  };
}

async function registrationForm(ctx) {
  return ctx.render("patients/new.html", registrationContext(ctx, { given_name: ctx.url.searchParams.get("given_name") || "" }, {}));
}

async function register(ctx) {
  const form = /** @type {FormData} */ (ctx.form);
  const data = pick(form, ["given_name", "family_name", "sex", "birth_date", "phone", "address"],
    ["given_name", "family_name", "sex", "birth_date"]);
  data.clinic_id = ctx.session.clinic_id;
  if (text(form, "identifier_value")) {
    data.identifiers = [{ system: text(form, "identifier_system") || "other", value: text(form, "identifier_value") }];
  }
  const values = { ...data, identifier_system: text(form, "identifier_system"), identifier_value: text(form, "identifier_value") };
  if (form.get("confirm_new") !== "yes") {
    const duplicates = likelyDuplicates(await ctx.patients(), data);
    if (duplicates.length) await ctx.read("patient.duplicate_check", duplicates.map((d) => d.id));
    if (duplicates.length) return ctx.render("patients/new.html", registrationContext(ctx, values, {}, duplicates), { status: 409 });
  }
  const path = ctx.url.pathname;
  const patientId = await formMid(form, path, "entity");
  const { mutation, problems } = build(ctx.session, "patient.register", "patient", patientId, data,
    { mid: await formMid(form, path), patient_id: patientId });
  if (problems.length) return ctx.render("patients/new.html", registrationContext(ctx, values, errorsFrom(problems)), { status: 422 });
  await ctx.queue([mutation]);
  ctx.flash("success", `${data.given_name} ${data.family_name} is registered.`);
  return ctx.redirect(chartOf(patientId));
}

async function chart(ctx) {
  const context = chartContext(ctx.session, await ctx.records(ctx.params[0]), ctx.params[0]);
  if (!context) return ctx.notLocal();
  // An open chart fetches itself at every change in the clinic: unchanged, it is not drawn
  // again, and nobody read anything new.
  // Who looks, where, in which session (the forms' CSRF token), is part of what is shown.
  const viewer = [ctx.session.user_id, ctx.session.clinic_id, ctx.session.shell?.csrf_token];
  const fingerprint = await fingerprintOf(JSON.stringify([viewer, context]));
  if (ctx.url.searchParams.get("since") === fingerprint) return new Response(null, { status: 204 });
  await ctx.read("patient.read", [ctx.params[0]]);
  return ctx.render("patients/chart.html", { ...context, fingerprint, mid: newId() }, { fragment: "patients/_chart.html" });
}

const DEMOGRAPHIC_FIELDS = ["given_name", "family_name", "sex", "birth_date", "phone", "address"];

async function editForm(ctx) {
  const patient = (await ctx.records(ctx.params[0])).get(`patient:${ctx.params[0]}`);
  if (!patient) return ctx.notLocal();
  await ctx.read("patient.read", [patient.id], { page: "edit" });
  return ctx.render("patients/edit.html", {
    patient: patientSummary(patient), values: patient, base: patient, errors: {}, sexes: ctx.session.sexes, mid: newId(),
  });
}

async function edit(ctx) {
  const form = /** @type {FormData} */ (ctx.form);
  const patient = (await ctx.records(ctx.params[0])).get(`patient:${ctx.params[0]}`);
  if (!patient) return ctx.notLocal();
  const base = Object.fromEntries(DEMOGRAPHIC_FIELDS.map((f) => [f, String(form.get(`base_${f}`) || "") || null]));
  const values = Object.fromEntries(DEMOGRAPHIC_FIELDS.map((f) => [f, text(form, f)]));
  const changed = Object.fromEntries(Object.entries(values).filter(([f, v]) => v !== base[f]));
  if (!Object.keys(changed).length) {
    ctx.flash("info", "Nothing was changed.");
    return ctx.redirect(chartOf(patient.id));
  }
  const baseVersion = integer(form, "base_version");
  const { mutation, problems } = build(ctx.session, "patient.update", "patient", patient.id, changed, {
    mid: await formMid(form, ctx.url.pathname), base, base_version: typeof baseVersion === "number" && baseVersion > 0 ? baseVersion : null,
    patient_id: patient.id,
  });
  if (problems.length) {
    return ctx.render("patients/edit.html", {
      patient: patientSummary(patient), values, base, errors: errorsFrom(problems), sexes: ctx.session.sexes, mid: newId(),
    }, { status: 422 });
  }
  await ctx.queue([mutation]);
  ctx.flash("success", "Details saved.");
  return ctx.redirect(chartOf(patient.id));
}

async function startVisit(ctx) {
  const form = /** @type {FormData} */ (ctx.form);
  const [patientId] = ctx.params;
  const records = await ctx.records(patientId);
  if (!records.get(`patient:${patientId}`)) return ctx.notLocal();
  const station = text(form, "station") || "registration";
  const reason = text(form, "reason");
  const data = { patient_id: patientId, clinic_id: ctx.session.clinic_id, station, ...(reason ? { reason } : {}) };
  const { mutation, problems } = build(ctx.session, "visit.start", "visit", await formMid(form, ctx.url.pathname, "entity"), data,
    { mid: await formMid(form, ctx.url.pathname), patient_id: patientId });
  if (problems.length) {
    ctx.flash("error", problems[0].message);
    return ctx.redirect(chartOf(patientId));
  }
  await ctx.queue([mutation]);
  ctx.flash("success", `Visit started at ${ctx.session.stations.labels[station] || station}.`);
  return ctx.redirect(chartOf(patientId));
}

async function visitPage(ctx) {
  const visit = (await ctx.records()).get(`visit:${ctx.params[0]}`);
  if (!visit) return ctx.notLocal();
  const context = visitContext(ctx.session, await ctx.records(visit.patient_id), ctx.params[0]);
  if (!context) return ctx.notLocal();
  await ctx.read("patient.read", [visit.patient_id], { visit_id: visit.id });
  return ctx.render("visits/visit.html", { ...context, mid: newId() });
}

async function moveVisit(ctx) {
  const form = /** @type {FormData} */ (ctx.form);
  const [visitId] = ctx.params;
  const records = await ctx.records();
  const visit = records.get(`visit:${visitId}`);
  if (!visit) return ctx.notLocal();
  const station = text(form, "station");
  if (!station || !ctx.session.stations.all.includes(station)) {
    ctx.flash("error", "Choose a station to send the patient to.");
    return ctx.redirect(`/visits/${visitId}`);
  }
  const baseVersion = integer(form, "base_version");
  const { mutation, problems } = build(ctx.session, "visit.move", "visit", visitId, { station }, {
    mid: await formMid(form, ctx.url.pathname), base_version: baseVersion,
    patient_id: visit.patient_id,
  });
  const back = localPath(text(form, "next"), `/visits/${visitId}`);
  if (problems.length) {
    ctx.flash("error", problems[0].message);
    return ctx.redirect(back);
  }
  await ctx.queue([mutation]);
  const patient = records.get(`patient:${visit.patient_id}`);
  const who = patient ? `${patient.given_name} ${patient.family_name}` : "The patient";
  ctx.flash("success", `${who} sent to ${ctx.session.stations.labels[station]}.`);
  return ctx.redirect(back);
}

async function patientForm(ctx, records, template, values, errors, extra = {}) {
  const patient = records.get(`patient:${ctx.params[0]}`);
  await ctx.read("patient.read", [patient.id], { page: template });
  return ctx.render(template, { patient: patientSummary(patient), values, errors, mid: newId(), ...extra },
    { status: Object.keys(errors).length ? 422 : 200 });
}

async function withPatient(ctx, then) {
  const records = await ctx.records(ctx.params[0]);
  if (!records.get(`patient:${ctx.params[0]}`)) return ctx.notLocal();
  return then(records);
}

async function vitalsForm(ctx) {
  return withPatient(ctx, (records) => patientForm(ctx, records, "clinical/vitals.html", {}, {}, { vitals: ctx.session.vitals }));
}

async function recordVitals(ctx) {
  return withPatient(ctx, async (records) => {
    const form = /** @type {FormData} */ (ctx.form);
    const [patientId] = ctx.params;
    const built = await vitalsMutations(ctx.session, records, form, ctx.url.pathname, patientId, await ctx.now());
    const values = Object.fromEntries(ctx.session.vitals.map((v) => [v.field, String(form.get(v.field) ?? "")]));
    if (!built.length) {
      return patientForm(ctx, records, "clinical/vitals.html", values, { _form: "Enter at least one reading." }, { vitals: ctx.session.vitals });
    }
    const errors = {};
    for (const b of built) if (b.problems.length) errors[b.field] = b.problems[0].message;
    if (Object.keys(errors).length) return patientForm(ctx, records, "clinical/vitals.html", values, errors, { vitals: ctx.session.vitals });
    await ctx.queue(built.map((b) => b.mutation));
    ctx.flash("success", `${built.length} reading${built.length > 1 ? "s" : ""} recorded.`);
    return ctx.redirect(chartOf(patientId, "#vitals"));
  });
}

async function noteForm(ctx) {
  return withPatient(ctx, (records) => patientForm(ctx, records, "clinical/note.html", {}, {}, { note: null }));
}

async function writeNote(ctx) {
  return withPatient(ctx, async (records) => {
    const form = /** @type {FormData} */ (ctx.form);
    const [patientId] = ctx.params;
    const path = ctx.url.pathname;
    const data = { patient_id: patientId, ...pick(form, ["text"], ["text"]) };
    const visitId = openVisitId(ctx.session, records, patientId);
    if (visitId) data.visit_id = visitId;
    const noteId = await formMid(form, path, "note-id");
    const written = build(ctx.session, "note.write", "note", noteId, data, { mid: await formMid(form, path, "write"), patient_id: patientId });
    const mutations = [written.mutation];
    if (form.get("sign") === "yes") {
      mutations.push(build(ctx.session, "note.sign", "note", noteId, {}, { mid: await formMid(form, path, "sign"), base_version: 1, patient_id: patientId }).mutation);
    }
    if (written.problems.length) return patientForm(ctx, records, "clinical/note.html", data, errorsFrom(written.problems), { note: null });
    await ctx.queue(mutations);
    ctx.flash("success", mutations.length === 2 ? "Note signed." : "Note saved as a draft.");
    return ctx.redirect(chartOf(patientId, "#notes"));
  });
}

async function appointmentForm(ctx) {
  return withPatient(ctx, (records) => patientForm(ctx, records, "clinical/appointment.html", {}, {}));
}

/** app/web/clinical.py::_with_offset */
function withOffset(local, offset) {
  if (!local) return "";
  const full = local.length === 16 ? `${local}:00` : local;
  return full + (offset && offset.length === 6 ? offset : "Z");
}

async function requestAppointment(ctx) {
  return withPatient(ctx, async (records) => {
    const form = /** @type {FormData} */ (ctx.form);
    const [patientId] = ctx.params;
    const local = text(form, "starts_at") || "";
    const data = { patient_id: patientId, clinic_id: ctx.session.clinic_id, starts_at: withOffset(local, text(form, "tz_offset")), ...pick(form, ["reason"]) };
    const { mutation, problems } = build(ctx.session, "appointment.book", "appointment", await formMid(form, ctx.url.pathname, "entity"), data,
      { mid: await formMid(form, ctx.url.pathname), patient_id: patientId });
    if (problems.length) return patientForm(ctx, records, "clinical/appointment.html", { ...data, starts_at: local }, errorsFrom(problems));
    await ctx.queue([mutation]);
    // Slots are finite: only the server can grant one, so this is a request until it answers.
    ctx.flash("info", "Appointment requested. The server confirms the slot when this device is connected; if the slot is full, the request shows under This device with the reason.");
    return ctx.redirect(chartOf(patientId, "#appointments"));
  });
}
