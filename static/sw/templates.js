// @ts-check
// The service worker's template environment: Nunjucks set up to render the shared templates
// (app/web/shared_templates.py) byte for byte as the server's Jinja2 does, given the same
// plain-dict context. tests/web/test_template_parity.py renders every shared template in
// both engines with contexts captured from the server and requires identical HTML.
//
// What differs between the engines, and what is done about it here:
// - HTML escaping. markupsafe turns & < > ' " into &amp; &lt; &gt; &#39; &#34;; Nunjucks
//   writes &quot; for " and also escapes \ as &#92;. Autoescaped output goes through
//   runtime.suppressValue, which calls the library's lib.escape, and a compiled template
//   gets the library's one runtime module, not one per environment: Nunjucks 3.2.4 has
//   no per-environment escape hook. So lib.escape of the nunjucks object passed in is
//   replaced (once) by markupsafe's escape; every environment of that nunjucks instance
//   then escapes as Jinja2 does. The escape / e / forceescape filters call lib.escape too.
// - Template source. Jinja2 turns \r\n and \r into \n and drops one trailing newline
//   (keep_trailing_newline=False); the loader does the same to the sources it hands over.
// - Filters. Ours (static/sw/filters.js, twins of app/web/filters.py); and Jinja2's
//   urlencode and capitalize, whose Nunjucks versions differ (encodeURIComponent; upper
//   case rather than Python's title case of the first letter).
// The rest is the templates' job: see the rules in app/web/shared_templates.py.

import { FILTERS } from "./filters.js";

const MARKUPSAFE = Symbol.for("clinic.markupsafeEscape");
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;" };

/** markupsafe.escape, for a string. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>'"]/g, (c) => ESCAPES[c]);
}

function installEscape(nunjucks) {
  if (nunjucks.lib.escape[MARKUPSAFE]) return;
  const escape = (text) => escapeHtml(text);
  escape[MARKUPSAFE] = true;
  nunjucks.lib.escape = escape;
}

/** Jinja2 reads template source with its newlines made \n and one trailing newline dropped. */
export function asJinjaReadsIt(source) {
  return source.replace(/\r\n|\r/g, "\n").replace(/\n$/, "");
}

/** A Nunjucks loader over {name: source}. */
function sourcesLoader(sources) {
  return {
    getSource(name) {
      if (!Object.prototype.hasOwnProperty.call(sources, name)) return null;
      return { src: asJinjaReadsIt(sources[name]), path: name, noCache: false };
    },
  };
}

// Python's str.capitalize() puts the first character in title case, which for these is not
// what toUpperCase() gives (ß → Ss, ǆ → ǅ, ﬁ → Fi, ᾳ → ᾼ ...).
const TITLE_CASE = new Map([
  [0xDF, "Ss"], [0x1C4, "\u01C5"], [0x1C6, "\u01C5"], [0x1C7, "\u01C8"], [0x1C9, "\u01C8"],
  [0x1CA, "\u01CB"], [0x1CC, "\u01CB"], [0x1F1, "\u01F2"], [0x1F3, "\u01F2"],
  [0x587, "\u0535\u0582"],
  [0x1FB2, "\u1FBA\u0345"], [0x1FB3, "\u1FBC"], [0x1FB4, "\u0386\u0345"],
  [0x1FB7, "\u0391\u0342\u0345"], [0x1FC2, "\u1FCA\u0345"], [0x1FC3, "\u1FCC"],
  [0x1FC4, "\u0389\u0345"], [0x1FC7, "\u0397\u0342\u0345"], [0x1FF2, "\u1FFA\u0345"],
  [0x1FF3, "\u1FFC"], [0x1FF4, "\u038F\u0345"], [0x1FF7, "\u03A9\u0342\u0345"],
  [0xFB00, "Ff"], [0xFB01, "Fi"], [0xFB02, "Fl"], [0xFB03, "Ffi"], [0xFB04, "Ffl"],
  [0xFB05, "St"], [0xFB06, "St"], [0xFB13, "\u0544\u0576"], [0xFB14, "\u0544\u0565"],
  [0xFB15, "\u0544\u056B"], [0xFB16, "\u054E\u0576"], [0xFB17, "\u0544\u056D"],
]);
for (const [lower, title] of [[0x1F80, 0x1F88], [0x1F90, 0x1F98], [0x1FA0, 0x1FA8]]) {
  for (let i = 0; i < 8; i++) TITLE_CASE.set(lower + i, String.fromCodePoint(title + i));
}

function titleCase(ch) {
  const c = /** @type {number} */ (ch.codePointAt(0));
  // Georgian Mkhedruli letters are their own title case; letters already in title case too.
  if ((c >= 0x10D0 && c <= 0x10FA) || (c >= 0x10FD && c <= 0x10FF) || /\p{Lt}/u.test(ch)) return ch;
  return TITLE_CASE.get(c) ?? ch.toUpperCase();
}

// Python's urllib.parse.quote leaves only A-Z a-z 0-9 _ . - ~ (and the safe characters).
function quote(text, safe) {
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%2F/g, safe ? "/" : "%2F");
}

function pythonStr(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  return String(value);
}

function jinjaFilters(nunjucks) {
  const { copySafeness, SafeString } = nunjucks.runtime;
  return {
    /** Jinja2's capitalize: str.capitalize(), the first character in title case. */
    capitalize(value) {
      const text = value === null || value === undefined ? "" : String(value);
      if (!text) return copySafeness(value, text);
      const first = String.fromCodePoint(/** @type {number} */ (text.codePointAt(0)));
      return copySafeness(value, titleCase(first) + text.slice(first.length).toLowerCase());
    },
    /** Jinja2's urlencode: quote(str) keeping "/", or a query string from a dict or pairs. */
    urlencode(value) {
      if (value === undefined) return "";
      if (value === null || typeof value !== "object" || value instanceof SafeString) {
        return quote(pythonStr(value), true);
      }
      const pairs = Array.isArray(value) ? value : Object.entries(value);
      const q = (x) => quote(pythonStr(x), false).replace(/%20/g, "+");
      return pairs.map(([k, v]) => `${q(k)}=${q(v)}`).join("&");
    },
  };
}

/**
 * A Nunjucks environment rendering the shared templates as the server's Jinja2 does.
 * @param {any} nunjucks the library (self.nunjucks in the worker, the CommonJS export in node)
 * @param {Record<string, string>} sources template name (as under templates/) → source
 */
export function createEnvironment(nunjucks, sources) {
  installEscape(nunjucks);
  const env = new nunjucks.Environment(sourcesLoader(sources), {
    autoescape: true, throwOnUndefined: false, trimBlocks: false, lstripBlocks: false,
  });
  for (const [name, filter] of Object.entries({ ...jinjaFilters(nunjucks), ...FILTERS })) {
    env.addFilter(name, filter);
  }
  return env;
}

/**
 * The HTML of one template for a plain-dict context.
 * @param {any} env from createEnvironment
 * @param {string} name
 * @param {Record<string, unknown>} context
 * @returns {string}
 */
export function render(env, name, context) {
  return env.render(name, context);
}
