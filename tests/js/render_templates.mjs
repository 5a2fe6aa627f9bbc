// Renders shared templates with the service worker's Nunjucks environment, for
// tests/web/test_template_parity.py. Reads {"sources": {name: source}, "cases": [{"name",
// "context"}]} as JSON on stdin; writes [{"html": ...} or {"error": ...}] (one per case).
import nunjucks from "../../static/vendor/nunjucks.min.js";
import { createEnvironment, render } from "../../static/sw/templates.js";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { sources, cases } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const env = createEnvironment(nunjucks, sources);
const results = cases.map(({ name, context }) => {
  try {
    return { html: render(env, name, context) };
  } catch (error) {
    return { error: String(error && error.stack ? error.stack : error) };
  }
});
process.stdout.write(JSON.stringify(results));
