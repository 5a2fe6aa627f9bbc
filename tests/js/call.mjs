// Calls exported functions of the worker's modules with JSON arguments, for tests that
// compare them with their Python twins: stdin {"module": "static/sw/x.js", "calls":
// [["name", [args...]], ...]}, stdout [{"value": ...} | {"error": "..."}].
import { pathToFileURL } from "node:url";
import path from "node:path";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => { text += chunk; });
  process.stdin.on("end", () => resolve(text));
}));
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const module = await import(pathToFileURL(path.join(root, input.module)).href);
const out = [];
for (const [name, args] of input.calls) {
  try {
    let value = await module[name](...args);
    if (value instanceof Map) value = Object.fromEntries(value);
    out.push({ value: value === undefined ? null : value });
  } catch (error) {
    out.push({ error: String(error && error.stack || error) });
  }
}
process.stdout.write(JSON.stringify(out));
