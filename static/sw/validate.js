// @ts-check
// Checks a form's mutation data offline against the same JSON Schemas the server applies
// (served by /app/session.json from app/domain/mutations.py), with the same messages as
// app/domain/validation.py, so a person sees the same correction with or without a network.
// Only the keywords those schemas use are implemented; the server checks again on arrival.

const WORDS = { integer: "a whole number", number: "a number", string: "text", object: "an object",
  array: "a list", null: "empty", boolean: "yes or no" };

const label = (schema, field) => (schema && schema["x-label"])
  || (field ? field.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()) : "This value");

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function typeMatches(wanted, value) {
  const actual = typeOf(value);
  return wanted === actual || (wanted === "number" && actual === "integer");
}

function isDate(text) {
  if (text.length !== 10 || !/^\d{4}-\d{2}-\d{2}$/.test(text)) return false;
  const [y, m, d] = text.split("-").map(Number);
  const probe = new Date(Date.UTC(y, m - 1, d));
  return y >= 1 && probe.getUTCFullYear() === y && probe.getUTCMonth() === m - 1 && probe.getUTCDate() === d;
}

function isDateTime(text) {
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(Z|z|[+-]\d{2}:\d{2})$/.exec(text);
  if (!match || !isDate(match[1])) return false;
  return Number(match[2]) < 24 && Number(match[3]) < 60 && Number(match[4] || 0) < 60;
}

/** Python's str() of a number in a message: 1 stays 1, 0.3 stays 0.3. */
const shown = (n) => String(n);

/**
 * @param {any} schema @param {any} value @param {string[]} path
 * @param {{field: string, message: string, where: string[]}[]} out
 */
function check(schema, value, path, out) {
  if (!schema || typeof schema !== "object") return;
  const field = path.join(".");
  const name = label(schema, path[path.length - 1] || "");
  const hint = schema["x-hint"];
  // Sorted later by where the error was found, as jsonschema's errors are; a missing field is
  // found on its parent object.
  const add = (message, at = field) => out.push({ field: at, message, where: path });

  if (schema.anyOf) {
    const fits = schema.anyOf.some((option) => {
      const probe = [];
      check(option, value, path, probe);
      return probe.length === 0;
    });
    if (!fits) add(`${name} is not valid.`);
    return;
  }
  if (schema.type !== undefined) {
    const wanted = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!wanted.some((w) => typeMatches(w, value))) {
      add(`${name} must be ${wanted.map((w) => WORDS[w] || w).join(" or ")}.`);
      return;
    }
  }
  if (schema.enum && !schema.enum.includes(value)) add(`${name} must be one of: ${schema.enum.join(", ")}.`);
  if (schema.const !== undefined && value !== schema.const) add(`${name} is not valid.`);
  if (typeof value === "string") {
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) {
      add(schema.minLength === 1 ? `${name} is required.` : `${name} is too short (at least ${schema.minLength} characters).`);
    }
    if (schema.maxLength !== undefined && length > schema.maxLength) add(`${name} is too long (at most ${schema.maxLength} characters).`);
    const badPattern = schema.pattern && !new RegExp(schema.pattern, "u").test(value);
    const badFormat = (schema.format === "date" && !isDate(value)) || (schema.format === "date-time" && !isDateTime(value));
    if (badPattern || badFormat) add(`${name} is not valid${hint ? `: ${hint}.` : "."}`);
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) add(`${name} must be at least ${shown(schema.minimum)}.`);
    if (schema.maximum !== undefined && value > schema.maximum) add(`${name} must be at most ${shown(schema.maximum)}.`);
  }
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) add(`${name} has too many entries (at most ${schema.maxItems}).`);
    if (schema.items) value.forEach((item, i) => check(schema.items, item, [...path, String(i)], out));
  }
  if (typeOf(value) === "object") {
    const properties = schema.properties || {};
    for (const required of schema.required || []) {
      if (!(required in value)) add(`${label(properties[required], required)} is required.`, [...path, required].join("."));
    }
    if (schema.minProperties !== undefined && Object.keys(value).length < schema.minProperties) {
      add("Nothing to change: give at least one field.");
    }
    if (schema.additionalProperties === false) {
      const extras = Object.keys(value).filter((k) => !(k in properties)).sort();
      if (extras.length) add(`Unknown field${extras.length > 1 ? "s" : ""}: ${extras.join(", ")}.`, field || extras[0]);
    }
    for (const [prop, sub] of Object.entries(properties)) {
      if (prop in value) check(sub, value[prop], [...path, prop], out);
    }
  }
}

/** Python's ordering of lists of strings. */
function comparePaths(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return a.length - b.length;
}

/** Problems as [{field, message}], one per field, ordered by field like the server's. */
export function validate(schema, value) {
  const found = [];
  check(schema, value, [], found);
  found.sort((a, b) => comparePaths(a.where, b.where));
  const seen = new Set();
  return found.filter((p) => (seen.has(p.field) ? false : (seen.add(p.field), true)))
    .map(({ field, message }) => ({ field, message }));
}

/** {field: message} for a form, as app/web/forms.py::errors_of. */
export function errorsOf(problems) {
  const errors = {};
  for (const p of problems) {
    const key = p.field.split(".")[0] || "_form";
    if (!(key in errors)) errors[key] = p.message;
  }
  return errors;
}
