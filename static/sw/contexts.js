// @ts-check
// Twins of the page context functions in app/contexts/: the same plain dicts, built from the
// records on this device (confirmed rows with pending mutations replayed) instead of the
// database, so the shared templates render the same page either way.

/** @typedef {Map<string, any>} Records */

const SEARCH_LIMIT = 25;
const TREND_WIDTH = 120, TREND_HEIGHT = 32, TREND_POINTS = 12;

/** All records of one entity. @param {Records} records */
export function ofEntity(records, entity) {
  const prefix = `${entity}:`;
  const out = [];
  for (const [k, v] of records) if (k.startsWith(prefix)) out.push(v);
  return out;
}

const byDesc = (field) => (a, b) => compare(b[field], a[field]) || compare(b.id, a.id);
const byAsc = (field) => (a, b) => compare(a[field], b[field]) || compare(a.id, b.id);

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  return a < b ? -1 : 1;
}

/** A short digest of what a page shows: the page sends it back when it refreshes itself, and
 * an unchanged page is answered "nothing new" (no render, and no read for the audit log). */
export async function fingerprintOf(text) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** app/contexts/common.py::patient_summary */
export function patientSummary(record) {
  return {
    id: record.id, given_name: record.given_name, family_name: record.family_name,
    sex: record.sex, birth_date: record.birth_date, phone: record.phone ?? null,
    identifiers: record.identifiers || [], version: record.version,
    ...(record.pending ? { pending: true } : {}),
  };
}

function moves(session, station) {
  return (session.stations.next[station] || []).map((s) => ({ station: s, label: session.stations.labels[s] }));
}

/** app/contexts/worklist.py::worklist_context */
export async function worklistContext(session, records, station) {
  const visits = ofEntity(records, "visit")
    .filter((v) => v.clinic_id === session.clinic_id && v.station === station && v.status === "in-progress")
    .sort(byAsc("station_since"));
  const rows = visits
    .map((v) => [v, records.get(`patient:${v.patient_id}`)])
    .filter(([, p]) => p);
  const basis = rows.map(([v, p]) => `${v.id}:${v.version}:${p.version}:${v.pending ? 1 : 0}${p.pending ? 1 : 0}`).join("|");
  return {
    fingerprint: await fingerprintOf(basis),
    station, station_label: session.stations.labels[station],
    stations: session.stations.active.map((s) => ({ key: s, label: session.stations.labels[s] })),
    visits: rows.map(([v, p]) => ({ ...v, patient: patientSummary(p), moves: moves(session, v.station) })),
  };
}

/** app/domain/duplicates.py::normalise_phone */
export function normalisePhone(phone) {
  return String(phone || "").replace(/\D/g, "").slice(-9);
}

/** app/contexts/search.py::search_patients over the patients on this device. */
export function searchPatients(records, q, limit = SEARCH_LIMIT) {
  const tokens = q.toLowerCase().split(/\s+/).filter(Boolean);
  if (!tokens.length) return [];
  const digits = normalisePhone(q);
  // Whether a token may match the phone depends on the query only: decided once, not per patient.
  const phoneTokens = new Set(tokens.filter((token) => digits.length >= 4 && /^\d+$/.test(token.replace(/[+-]/g, ""))));
  const matches = ofEntity(records, "patient").filter((p) => tokens.every((token) => {
    if ((p.given_name || "").toLowerCase().includes(token)) return true;
    if ((p.family_name || "").toLowerCase().includes(token)) return true;
    if ((p.identifiers || []).some((i) => String(i.value).toLowerCase().startsWith(token))) return true;
    return phoneTokens.has(token) && String(p.phone || "").replace(/ /g, "").includes(digits);
  }));
  matches.sort((a, b) => compare(a.family_name, b.family_name) || compare(a.given_name, b.given_name));
  return matches.slice(0, limit);
}

export function searchContext(records, q) {
  return {
    q, searched: Boolean(q.trim()),
    results: searchPatients(records, q).map(patientSummary), limit: SEARCH_LIMIT,
  };
}

/** Python's f"{x:.1f}": like toFixed(1), but an exact tie goes to the even digit. */
export function oneDecimal(x) {
  const tenths = x * 10;
  if (Number.isInteger(tenths * 2) && !Number.isInteger(tenths)) {
    const down = Math.floor(tenths);
    return ((down % 2 === 0 ? down : down + 1) / 10).toFixed(1);
  }
  return x.toFixed(1);
}

/** app/contexts/chart.py::trend_points */
export function trendPoints(values) {
  values = values.slice(-TREND_POINTS);
  if (values.length < 2) return "";
  const low = Math.min(...values), high = Math.max(...values);
  const span = (high - low) || 1.0;
  const step = TREND_WIDTH / (values.length - 1);
  return values.map((v, i) => `${oneDecimal(i * step)},${oneDecimal(TREND_HEIGHT - 2 - (v - low) / span * (TREND_HEIGHT - 4))}`).join(" ");
}

function vitalsOf(session, observations) {
  const byCode = new Map();
  for (const o of observations) {
    if (typeof o.value !== "number") continue;
    if (!byCode.has(o.code)) byCode.set(o.code, []);
    byCode.get(o.code).push(o);
  }
  const rows = [];
  for (const vital of session.vitals) {
    const series = (byCode.get(vital.code) || []).slice().sort(byAsc("effective_at"));
    if (!series.length) continue;
    const latest = series[series.length - 1];
    rows.push({
      code: vital.code, label: vital.label, unit: vital.unit, value: latest.value,
      effective_at: latest.effective_at, count: series.length,
      trend: trendPoints(series.map((o) => o.value)),
      ...(series.some((o) => o.pending) ? { pending: true } : {}),
    });
  }
  return rows;
}

/** app/contexts/chart.py::chart_context, without the history of changes (server-only). */
export function chartContext(session, records, patientId) {
  const patient = records.get(`patient:${patientId}`);
  if (!patient) return null;
  const mine = (entity) => ofEntity(records, entity).filter((r) => r.patient_id === patientId);
  const names = session.people || {};
  const name = (id) => names[id] || "";
  const clinics = session.clinics || {};
  const vitalLabels = Object.fromEntries(session.vitals.map((v) => [v.code, v.label]));

  const visitDict = (v) => ({
    ...v, station_label: session.stations.labels[v.station], clinic_name: clinics[v.clinic_id] || "",
    moves: moves(session, v.station),
  });
  const visits = mine("visit").sort(byDesc("started_at"));
  const observations = mine("observation").sort(byDesc("effective_at"));
  const openVisit = visits.find((v) => v.status === "in-progress" && v.clinic_id === session.clinic_id);
  return {
    patient: {
      ...patientSummary(patient), address: patient.address ?? null,
      clinic_name: clinics[patient.clinic_id] || "", created_at: patient.created_at,
      updated_at: patient.updated_at,
    },
    open_visit: openVisit ? visitDict(openVisit) : null,
    visits: visits.map(visitDict),
    vitals: vitalsOf(session, observations),
    observations: observations.slice(0, 50).map((o) => ({ ...o, label: vitalLabels[o.code] || o.code })),
    conditions: mine("condition").sort(byDesc("created_at")),
    notes: mine("note").sort(byDesc("created_at")).map((n) => ({
      ...n, author: name(n.created_by), signer: name(n.signed_by),
      addenda: (n.addenda || []).map((a) => ({ ...a, author: name(a.created_by) })),
    })),
    medications: mine("medication_request").sort(byDesc("created_at")).map((m) => ({
      ...m, prescriber: name(m.created_by), remaining: m.quantity - m.quantity_dispensed,
    })),
    appointments: mine("appointment").sort(byDesc("starts_at")),
    consents: mine("consent").sort(byDesc("signed_at")),
    can: session.can,
  };
}

/** app/web/clinical.py::visit_get */
export function visitContext(session, records, visitId) {
  const visit = records.get(`visit:${visitId}`);
  if (!visit) return null;
  const chart = chartContext(session, records, visit.patient_id);
  if (!chart) return null;
  const thisVisit = chart.visits.find((v) => v.id === visitId);
  return {
    ...chart, visit: thisVisit,
    visit_observations: chart.observations.filter((o) => o.visit_id === visitId),
  };
}

/** The open visit of a patient at this clinic, as app/web/clinical.py::_open_visit_id. */
export function openVisitId(session, records, patientId) {
  const visit = ofEntity(records, "visit").filter((v) => v.patient_id === patientId
    && v.status === "in-progress" && v.clinic_id === session.clinic_id).sort(byDesc("started_at"))[0];
  return visit ? visit.id : null;
}
