// Compares two capture files (capture.mjs output) case by case, field by field.
//
//   node compare.mjs openclaw.json clawgate.json [--only REGEX] [--max 12] [--json]
//                    [--allow allowed-differences.json --store legacy|sqlite]
//
// Prints, per case, "same" or the differing paths with both values (`-` = only in the first file,
// `+` = only in the second, `~` = both differ, `order` = same rows in another order); with --json
// one object {case: {same, diffs:[{path, a, b, kind}]}}. Arrays of rows that carry an identity
// (key, agentId, channel, date, provider+model, name …) are matched by it, not by position.
// Answers stored as {"sameAs": case} are resolved first. Timings are ignored.
//
// With --allow, each difference is checked against the allow-list (allowed-differences.json:
// entries of {id, doc, cases, path, kinds?, stores?}, `cases` and `path` regular expressions, each
// entry naming the section of docs/openclaw-compatibility.md that explains it). Output then ends
// with one JSON line {unexplained:[{case, path, kind, a, b}], used:{id: count}} and the exit
// status is 1 when a difference is not on the list.
import { readFileSync } from "node:fs";

const argv = process.argv.slice(2);
const files = argv.filter((a, i) => !a.startsWith("--") && !(argv[i - 1] || "").match(/^--(only|max|allow|store)$/));
const opt = (name) => {
  const i = argv.indexOf("--" + name);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (files.length !== 2) {
  console.error("usage: node compare.mjs A.json B.json [--only REGEX] [--max N] [--json]");
  process.exit(2);
}
const only = opt("only") ? new RegExp(opt("only")) : null;
const max = Number(opt("max") || 12);
const load = (f) => {
  const results = JSON.parse(readFileSync(f, "utf8")).results;
  const byCase = new Map(results.map((r) => [r.case, r]));
  for (const r of results) if (r.payload && r.payload.sameAs && Object.keys(r.payload).length === 1) r.payload = byCase.get(r.payload.sameAs)?.payload;
  for (const r of results) delete r.ms;
  return byCase;
};
const [a, b] = files.map(load);
const MISSING = Symbol("missing");
function diff(x, y, path, out) {
  if (out.length > 10000) return;
  if (x === y) return;
  const tx = x === MISSING ? "missing" : Array.isArray(x) ? "array" : x === null ? "null" : typeof x;
  const ty = y === MISSING ? "missing" : Array.isArray(y) ? "array" : y === null ? "null" : typeof y;
  if (tx !== ty || (tx !== "object" && tx !== "array")) {
    if (tx === "number" && ty === "number" && Math.abs(x - y) <= 1e-9 * Math.max(Math.abs(x), Math.abs(y))) return;
    out.push({ path: path || "(root)", a: x === MISSING ? undefined : x, b: y === MISSING ? undefined : y, kind: tx === "missing" ? "+" : ty === "missing" ? "-" : "~" });
    return;
  }
  if (tx === "array") {
    // The normaliser's "<N more, M in all>" marker is compared on its own, after the rows.
    const marker = (e) => typeof e === "string" && /^<\d+ more, \d+ in all>$/.test(e);
    if (x.some(marker) || y.some(marker)) {
      const mx = x.find(marker);
      const my = y.find(marker);
      if (mx !== my) out.push({ path: `${path}[more]`, a: mx, b: my, kind: mx === undefined ? "+" : my === undefined ? "-" : "~" });
      diff(x.filter((e) => !marker(e)), y.filter((e) => !marker(e)), path, out);
      return;
    }
    // Rows with an identity (session key, agent, channel, day, model, tool name …) are matched by
    // it, so that one order difference is one finding, not a diff of every field of every row.
    const id = identity(x, y);
    if (id) {
      const mx = new Map(x.map((e) => [id(e), e]));
      const my = new Map(y.map((e) => [id(e), e]));
      const common = [...mx.keys()].filter((k) => my.has(k));
      const oy = [...my.keys()].filter((k) => mx.has(k));
      if (common.join("\u0000") !== oy.join("\u0000")) out.push({ path: `${path}[order]`, a: common.slice(0, 12), b: oy.slice(0, 12), kind: "order" });
      for (const k of new Set([...mx.keys(), ...my.keys()])) diff(mx.has(k) ? mx.get(k) : MISSING, my.has(k) ? my.get(k) : MISSING, `${path}[${k}]`, out);
      return;
    }
  }
  const keys = tx === "array" ? [...Array(Math.max(x.length, y.length)).keys()] : [...new Set([...Object.keys(x), ...Object.keys(y)])].sort();
  for (const k of keys) {
    const vx = tx === "array" ? (k < x.length ? x[k] : MISSING) : k in x ? x[k] : MISSING;
    const vy = tx === "array" ? (k < y.length ? y[k] : MISSING) : k in y ? y[k] : MISSING;
    diff(vx, vy, path ? `${path}.${k}` : String(k), out);
  }
}
const ID_FIELDS = [["key"], ["agentId"], ["channel"], ["date", "quarterIndex"], ["date", "provider", "model"], ["provider", "model"], ["date"], ["name"], ["id"], ["method"]];
/** A function giving each element's identity when every element of both arrays has the same unique one. */
function identity(x, y) {
  const all = [...x, ...y];
  if (!all.length || !all.every((e) => e && typeof e === "object" && !Array.isArray(e))) return null;
  for (const fields of ID_FIELDS) {
    if (!all.every((e) => fields.every((f) => f in e))) continue;
    const f = (e) => fields.map((k) => String(e[k])).join("/");
    if (new Set(x.map(f)).size === x.length && new Set(y.map(f)).size === y.length) return f;
  }
  return null;
}
const report = {};
for (const name of new Set([...a.keys(), ...b.keys()])) {
  if (only && !only.test(name)) continue;
  const out = [];
  diff(a.has(name) ? a.get(name) : MISSING, b.has(name) ? b.get(name) : MISSING, "", out);
  report[name] = { same: out.length === 0, diffs: out };
}
if (opt("allow")) {
  const allow = JSON.parse(readFileSync(opt("allow"), "utf8")).allowed.map((e) => ({
    ...e,
    casesRe: new RegExp(e.cases),
    pathRe: new RegExp(e.path),
  }));
  const store = opt("store");
  const used = Object.fromEntries(allow.map((e) => [e.id, 0]));
  const unexplained = [];
  for (const [name, r] of Object.entries(report)) {
    for (const d of r.diffs) {
      const hit = allow.find(
        (e) => e.casesRe.test(name) && e.pathRe.test(d.path) && (!e.kinds || e.kinds.includes(d.kind)) && (!e.stores || e.stores.includes(store)),
      );
      if (hit) used[hit.id]++;
      else unexplained.push({ case: name, path: d.path, kind: d.kind, a: d.a, b: d.b });
    }
  }
  const short = (v) => {
    const s = JSON.stringify(v);
    return s === undefined ? "∅" : s.length > 160 ? s.slice(0, 157) + "…" : s;
  };
  for (const u of unexplained) console.log(`unexplained ${u.case}: ${u.kind} ${u.path}: ${short(u.a)}  |  ${short(u.b)}`);
  const cases = Object.keys(report).length;
  const same = Object.values(report).filter((r) => r.same).length;
  const summary = { cases, identical: same, unexplainedCount: unexplained.length, unexplained: unexplained.slice(0, 100).map((u) => ({ ...u, a: short(u.a), b: short(u.b) })), used };
  // exitCode, not exit(): a pipe would lose what is still buffered.
  process.stdout.write(JSON.stringify(summary) + "\n");
  process.exitCode = unexplained.length ? 1 : 0;
} else if (argv.includes("--json")) {
  process.stdout.write(JSON.stringify(report, null, 1) + "\n");
} else {
  const short = (v) => {
    const s = JSON.stringify(v);
    return s === undefined ? "∅" : s.length > 140 ? s.slice(0, 137) + "…" : s;
  };
  let same = 0;
  for (const [name, r] of Object.entries(report)) {
    if (r.same) {
      same++;
      continue;
    }
    console.log(`## ${name}  (${r.diffs.length} differences)`);
    for (const d of r.diffs.slice(0, max)) console.log(`  ${d.kind} ${d.path}: ${short(d.a)}  |  ${short(d.b)}`);
    if (r.diffs.length > max) console.log(`  … ${r.diffs.length - max} more`);
  }
  console.log(`${same} of ${Object.keys(report).length} cases identical`);
}
