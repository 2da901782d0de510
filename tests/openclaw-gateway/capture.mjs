// Runs a list of protocol-v4 cases (method x params, and handshake variants) against any OpenClaw-
// compatible gateway (OpenClaw itself or clawgate) and writes one JSON file of results, normalised
// so that two gateways' files on the same store can be diffed.
//
//   node capture.mjs --url ws://127.0.0.1:P --token T --out FILE [--cases cases.json]
//                    [--label openclaw|clawgate] [--only REGEX] [--raw] [--vars JSON]
//                    [--state-dir DIR] [--work DIR] [--warm SECONDS]
//
// Every method case runs on one shared connection made like OpenClaw's own backend clients
// (client id `gateway-client`, mode `backend`, token, admin+read+write scopes, no device identity,
// which OpenClaw allows on loopback). Handshake cases each open their own connection and record
// the challenge, the connect answer, follow-up calls and how the socket closed.
//
// Output: {meta:{label,url,capturedAt,node}, results:[{case, ok, payload|error, ms, …}]}.
// With --raw nothing is normalised (no pinned fields, no truncated arrays).
// Runs under the machine's node (>= 20): only `ws` and node:crypto are used.
import { createHash, generateKeyPairSync, randomUUID, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : true]] : acc), []),
);
if (!args.url || !args.out) {
  console.error("usage: node capture.mjs --url ws://127.0.0.1:P --token T --out FILE [--cases cases.json] [--label L] [--only REGEX] [--raw]");
  process.exit(2);
}
const url = args.url;
const token = args.token === true ? "" : args.token || "";
const httpOrigin = url.replace(/^ws/, "http").replace(/\/+$/, "");
// `${name}` in a case's strings is replaced from --vars '{"name":"value"}' (store-specific keys, agents, dates).
const vars = args.vars ? JSON.parse(args.vars) : {};
const spec = JSON.parse(
  readFileSync(args.cases || join(here, "cases.json"), "utf8").replace(/\$\{(\w+)\}/g, (m, k) => (k in vars ? vars[k] : m)),
);
const only = args.only ? new RegExp(args.only) : null;
const CALL_TIMEOUT_MS = Number(args["call-timeout"] || 60000);

// ------------------------------------------------------------------ normaliser
// Fields that change from one call to the next whatever the store holds. Pinned by path pattern
// (dot-joined, `*` = any array index or key) so that a session row's `updatedAt`, which comes from
// the store, is kept.
const PINNED = [
  "updatedAt", // sessions.usage / usage.cost generation time
  "durationMs", // health snapshot build time
  "sessions.recent.*.age",
  "agents.*.sessions.recent.*.age",
  "snapshot.health.sessions.recent.*.age",
  "snapshot.health.agents.*.sessions.recent.*.age",
  "snapshot.health.durationMs",
  "snapshot.presence",
  "snapshot.stateVersion",
  "sessions.byAgent.*.recent.*.age",
  "sessions.recent.*.age",
];
// Keys whose values are volatile wherever they appear (clocks, process ids, per-run hashes and
// ports, per-connection ids and tokens).
const PINNED_KEYS = new Set([
  "ts",
  "age",
  "snapshotAt",
  "refreshedAt",
  "uptimeMs",
  "eventLoop",
  "pid",
  "processMemory",
  "memory",
  "instanceId",
  "connId",
  "bootId",
  "nonce",
  "recoveryScope",
  "deviceToken",
  "issuedAtMs",
  "appliedConfigHash",
  "configRevisionHash",
  "hash",
  "port",
  "pluginSurfaceUrls", // carries a per-run capability token
  "raw", // config.get: the config file's text (port, paths)
  "atMs",
  "ms",
]);
/** The type skeleton of a value: for methods whose shape matters, not their (run-specific) data. */
function skeleton(v) {
  if (Array.isArray(v)) return v.length ? [skeleton(v[0]), `<${v.length} items>`] : [];
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, skeleton(v[k])]));
  return v === null ? "null" : typeof v;
}
// Paths differ per run (each gateway gets its own copy of the store): `--state-dir D` and `--work W`
// turn them into `<stateDir>` and `<work>` inside every string.
const pathLabels = [
  [args["state-dir"], "<stateDir>"],
  [args.work, "<work>"],
].filter(([p]) => typeof p === "string" && p.length > 1);
const relabel = (s) => pathLabels.reduce((acc, [p, label]) => acc.split(p).join(label), s);
const MAX_ITEMS = Number(spec.maxItems || 25);
function pinned(path) {
  if (path.length && PINNED_KEYS.has(path[path.length - 1])) return true;
  return PINNED.some((p) => {
    const a = p.split(".");
    if (a.length !== path.length) return false;
    return a.every((s, i) => s === "*" || s === path[i]);
  });
}
// Arrays inside array rows (a session's daily and quarter-hour buckets) keep fewer items: they
// multiply with the rows and would make the files large without showing more kinds of difference.
const NESTED_MAX_ITEMS = Number(spec.nestedMaxItems || 6);
function normalise(value, path = [], maxItems = MAX_ITEMS) {
  if (pinned(path)) return value === undefined ? value : "<pinned>";
  if (Array.isArray(value)) {
    const limit = path.includes("*") ? Math.min(maxItems, NESTED_MAX_ITEMS) : maxItems;
    const kept = value.slice(0, limit).map((v) => normalise(v, [...path, "*"], maxItems));
    if (value.length > limit) kept.push(`<${value.length - limit} more, ${value.length} in all>`);
    return kept;
  }
  if (value && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) out[k] = normalise(value[k], [...path, k], maxItems);
    return out;
  }
  return typeof value === "string" ? relabel(value) : value;
}
const norm = (v, maxItems) => (args.raw ? v : normalise(v, [], maxItems ?? MAX_ITEMS));

// ------------------------------------------------------------------ device identity (Ed25519)
// As OpenClaw's clients make it: id = sha256 hex of the raw 32-byte public key, key and signature
// base64url, the signed string `v3|id|clientId|mode|role|scopes|signedAt|token|nonce|platform|family`.
const b64url = (buf) => Buffer.from(buf).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const keys = generateKeyPairSync("ed25519");
const rawPub = keys.publicKey.export({ format: "der", type: "spki" }).subarray(-32);
const device = { id: createHash("sha256").update(rawPub).digest("hex"), publicKey: b64url(rawPub) };
function signedDevice(params, nonce) {
  const signedAt = Date.now();
  const lower = (s) => (typeof s === "string" ? s.trim().toLowerCase() : "");
  const payload = [
    "v3",
    device.id,
    params.client.id,
    params.client.mode,
    params.role || "operator",
    (params.scopes || []).join(","),
    String(signedAt),
    params.auth?.token ?? "",
    nonce,
    lower(params.client.platform),
    lower(params.client.deviceFamily),
  ].join("|");
  return { id: device.id, publicKey: device.publicKey, signature: b64url(sign(null, Buffer.from(payload), keys.privateKey)), signedAt, nonce };
}

// ------------------------------------------------------------------ connect variants
const ADMIN = ["operator.admin", "operator.read", "operator.write"];
const UI_SCOPES = ["operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.questions", "operator.pairing"];
function connectParams(v) {
  const client =
    v.client === "control-ui"
      ? {
          id: "openclaw-control-ui",
          version: "2026.9.6",
          buildId: "2026.9.6-release-eb377ac59e6c-2026-09-23T16-33-12.144Z",
          platform: "Linux x86_64",
          mode: "webchat",
          instanceId: randomUUID(),
          timeZone: "UTC",
        }
      : v.client === "cli"
        ? { id: "cli", version: "2026.9.6", platform: "linux", mode: "cli" }
        : { id: "gateway-client", version: "capture-1", platform: "linux", mode: "backend" };
  const p = {
    minProtocol: v.minProtocol ?? 4,
    maxProtocol: v.maxProtocol ?? 4,
    client,
    role: "operator",
    scopes: v.scopes ?? (v.client === "control-ui" ? UI_SCOPES : ADMIN),
    caps: v.client === "control-ui" ? ["tool-events"] : [],
  };
  if (v.client !== "control-ui") Object.assign(p, { commands: [], permissions: {} });
  const auth = v.auth ?? "token";
  if (auth === "token") p.auth = { token };
  else if (auth === "bad") p.auth = { token: "wrong-" + token };
  else if (auth === "empty") p.auth = {};
  if (v.client === "control-ui") Object.assign(p, { locale: "en-US", userAgent: "Mozilla/5.0 (X11; Linux x86_64) capture.mjs" });
  if (v.extra) Object.assign(p, v.extra);
  if (v.clientExtra) Object.assign(p.client, v.clientExtra);
  return p;
}

// ------------------------------------------------------------------ one connection
/** Opens a socket and collects frames; every wait has a deadline. */
function open(v = {}) {
  const headers = {};
  const origin = v.origin === "self" ? httpOrigin : v.origin || undefined;
  const ws = new WebSocket(url, { headers, origin, maxPayload: 256 * 1024 * 1024, handshakeTimeout: 10000 });
  const conn = { ws, frames: [], waiters: [], closed: null, opened: null, upgradeError: null, t0: Date.now() };
  ws.on("message", (data, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(isBinary ? data.toString("utf8") : String(data));
    } catch {
      msg = { nonJson: String(data).slice(0, 200) };
    }
    msg.__at = Date.now() - conn.t0;
    conn.frames.push(msg);
    conn.waiters = conn.waiters.filter((w) => !w(msg));
  });
  ws.on("close", (code, reason) => {
    conn.closed = { code, reason: String(reason), atMs: Date.now() - conn.t0 };
    conn.waiters = conn.waiters.filter((w) => !w(null));
  });
  let settleOpen;
  // With this listener `ws` leaves a refused upgrade (an HTTP answer instead of 101) to us: record
  // status and body, then settle `opened` ourselves, or it would wait forever.
  ws.on("unexpected-response", (req, res) => {
    conn.upgradeError = { status: res.statusCode, body: "" };
    res.setEncoding("utf8");
    res.on("data", (d) => (conn.upgradeError.body = (conn.upgradeError.body + d).slice(0, 500)));
    res.on("end", () => {
      req.destroy();
      settleOpen(false);
    });
    res.on("error", () => settleOpen(false));
  });
  ws.on("error", (e) => {
    conn.error = String(e.message || e);
    conn.waiters = conn.waiters.filter((w) => !w(null));
  });
  conn.opened = new Promise((resolve) => {
    settleOpen = resolve;
    ws.once("open", () => resolve(true));
    ws.once("close", () => resolve(false));
    ws.once("error", () => resolve(false));
  });
  /** Waits for a frame matching `pred`, or the close, or the deadline; returns the frame or null. */
  conn.wait = (pred, ms) =>
    new Promise((resolve) => {
      const seen = conn.frames.find(pred);
      if (seen) return resolve(seen);
      if (conn.closed || conn.error) return resolve(null);
      const timer = setTimeout(() => {
        conn.waiters = conn.waiters.filter((w) => w !== check);
        resolve(null);
      }, ms);
      const check = (msg) => {
        if (msg === null || pred(msg)) {
          clearTimeout(timer);
          resolve(msg);
          return true;
        }
        return false;
      };
      conn.waiters.push(check);
    });
  conn.waitClose = (ms) =>
    conn.closed
      ? Promise.resolve(conn.closed)
      : new Promise((resolve) => {
          const timer = setTimeout(() => resolve(null), ms);
          ws.once("close", () => {
            clearTimeout(timer);
            resolve(conn.closed);
          });
        });
  let nextId = 1;
  conn.call = async (method, params, ms = CALL_TIMEOUT_MS) => {
    const id = `cap-${nextId++}`;
    const t = Date.now();
    const frame = { type: "req", id, method };
    if (params !== undefined) frame.params = params;
    ws.send(JSON.stringify(frame));
    const res = await conn.wait((m) => m.type === "res" && m.id === id, ms);
    const took = Date.now() - t;
    if (!res) return { ok: false, error: { noAnswer: true, closed: conn.closed, afterMs: ms }, ms: took };
    return res.ok ? { ok: true, payload: res.payload, ms: took } : { ok: false, error: res.error, ms: took };
  };
  conn.connect = async (v2) => {
    const challenge = await conn.wait((m) => m.type === "event" && m.event === "connect.challenge", 10000);
    const p = connectParams(v2);
    if (v2.device) p.device = signedDevice(p, challenge?.payload?.nonce ?? "");
    const res = await conn.call("connect", p, 30000);
    return { challenge, res };
  };
  return conn;
}
const publicClose = (c) => (c ? { code: c.code, reason: c.reason } : null);
const challengeShape = (ch) => (ch ? { payloadKeys: Object.keys(ch.payload || {}).sort(), capabilities: ch.payload?.capabilities ?? null } : null);

// ------------------------------------------------------------------ case runners
async function runHandshake(c) {
  const v = c.handshake;
  const conn = open(v);
  const opened = await conn.opened;
  const out = { case: c.name, kind: "handshake" };
  if (!opened) {
    out.ok = false;
    out.upgrade = conn.upgradeError || { error: conn.error || "no open" };
    out.close = publicClose(conn.closed);
    return out;
  }
  const challenge = await conn.wait((m) => m.type === "event" && m.event === "connect.challenge", 10000);
  out.challenge = challengeShape(challenge);
  const first = v.first || "connect";
  if (first === "non-json") {
    conn.ws.send("this is not json");
  } else if (first === "close") {
    conn.ws.close(1000, "bye");
  } else if (first === "other-method") {
    conn.ws.send(JSON.stringify({ type: "req", id: "x1", method: "health", params: {} }));
  } else if (first === "binary") {
    conn.ws.send(Buffer.from(JSON.stringify({ type: "req", id: "x1", method: "connect", params: connectParams(v) })));
  } else {
    const p = connectParams(v);
    if (v.device) p.device = signedDevice(p, challenge?.payload?.nonce ?? "");
    if (v.dropFields) for (const f of v.dropFields) delete p[f];
    const r = await conn.call("connect", p, 30000);
    out.ok = r.ok;
    if (r.ok) {
      out.hello = v.keepHello ? norm(r.payload, 100000) : norm(helloSummary(r.payload), 100000);
    } else out.error = r.error;
    for (const call of v.then || []) {
      if (conn.closed) break;
      const rr = await conn.call(call.method, call.params ?? {}, 20000);
      (out.then ||= []).push({ method: call.method, ok: rr.ok, ...(rr.ok ? { payloadKeys: payloadKeys(rr.payload) } : { error: rr.error }) });
    }
    if (v.waitEvent && !conn.closed) {
      const t = Date.now();
      const ev = await conn.wait((m) => m.type === "event" && m.event === v.waitEvent, v.waitMs || 40000);
      // The wait is logged, not kept: OpenClaw ticks all sockets from one 30 s timer, so a
      // client's first tick comes 0-30 s after its hello.
      if (ev) process.stderr.write(`    first ${v.waitEvent} ${Date.now() - t} ms after hello-ok\n`);
      out.event = ev ? { event: ev.event, payloadKeys: payloadKeys(ev.payload) } : { event: null, waitedMs: v.waitMs || 40000 };
    }
    if (v.clientClose && !conn.closed) {
      const t = Date.now();
      conn.ws.close(1000, "client done");
      const closed = await conn.waitClose(5000);
      out.clientClose = closed ? { serverAnswered: true, code: closed.code, reason: closed.reason, ms: Date.now() - t } : { serverAnswered: false, waitedMs: 5000 };
      if (!closed) conn.ws.terminate();
      return out;
    }
  }
  const closed = await conn.waitClose(v.closeWaitMs ?? 3000);
  out.close = publicClose(closed);
  out.framesBeforeClose = conn.frames
    .filter((m) => !(m.type === "event" && (m.event === "connect.challenge" || m.event === "tick" || m.event === "health" || m.event === "presence")))
    .filter((m) => !(m.type === "res" && m.id?.startsWith("cap-")))
    .map((m) => ({ type: m.type, ok: m.ok, error: m.error, event: m.event, nonJson: m.nonJson }));
  if (!closed) {
    out.close = { stillOpenAfterMs: v.closeWaitMs ?? 3000 };
    conn.ws.terminate();
  }
  if (first !== "connect") out.ok = false;
  return out;
}
/** JSON with one key per line, but any object or array that fits in 110 characters on one line. */
function pretty(v, indent = "") {
  const flat = JSON.stringify(v);
  if (flat === undefined || flat.length + indent.length <= 110 || v === null || typeof v !== "object") return flat;
  const inner = indent + " ";
  if (Array.isArray(v)) return "[\n" + v.map((x) => inner + pretty(x, inner)).join(",\n") + "\n" + indent + "]";
  const keys = Object.keys(v).filter((k) => v[k] !== undefined);
  return "{\n" + keys.map((k) => inner + JSON.stringify(k) + ": " + pretty(v[k], inner)).join(",\n") + "\n" + indent + "}";
}
function payloadKeys(p) {
  return p && typeof p === "object" && !Array.isArray(p) ? Object.keys(p).sort() : typeof p;
}
function helloSummary(h) {
  if (!h || typeof h !== "object") return h;
  return {
    keys: Object.keys(h).sort(),
    type: h.type,
    protocol: h.protocol,
    serverKeys: Object.keys(h.server || {}).sort(),
    featureKeys: Object.keys(h.features || {}).sort(),
    methodCount: h.features?.methods?.length,
    auth: h.auth && { ...h.auth, deviceToken: h.auth.deviceToken ? "<set>" : undefined, issuedAtMs: undefined, deviceTokens: undefined },
    policy: h.policy,
    snapshotKeys: Object.keys(h.snapshot || {}).sort(),
  };
}

async function main() {
  const cases = spec.cases.filter((c) => !only || only.test(c.name));
  const results = [];
  let shared = null;
  const connectDeadline = Date.now() + 60000;
  const sharedConn = async () => {
    if (shared && !shared.closed) return shared;
    shared = open({});
    if (!(await shared.opened)) throw new Error(`cannot open ${url}: ${JSON.stringify(shared.upgradeError || shared.error)}`);
    const { res } = await shared.connect({});
    if (!res.ok) {
      // As OpenClaw's clients do: a retryable refusal ("gateway starting") is retried after its delay.
      if (res.error?.retryable && Date.now() < connectDeadline) {
        shared.ws.terminate();
        await new Promise((r) => setTimeout(r, res.error.retryAfterMs || 500));
        shared = null;
        return sharedConn();
      }
      throw new Error(`backend connect refused: ${JSON.stringify(res.error)}`);
    }
    return shared;
  };
  if (args.warm) {
    // Both gateways fill their usage caches in the background after start-up; until then answers
    // say cacheStatus "refreshing"/"partial" with partial totals. No event tells when the fill is
    // done, so poll (every 500 ms, up to --warm seconds) until every call answers "fresh".
    const conn = await sharedConn();
    const until = Date.now() + Number(args.warm === true ? 120 : args.warm) * 1000;
    const probes = [
      ["sessions.usage", { agentScope: "all", range: "all", limit: 1000 }],
      ["usage.cost", { range: "all" }],
      ["usage.cost", {}],
      // Health's session counts are a snapshot both gateways refresh in the background (clawgate
      // on the first health call): "refreshing" until it holds a count.
      ["health", {}],
    ];
    for (;;) {
      const states = [];
      for (const [m, p] of probes) {
        const r = await conn.call(m, p);
        const health = m === "health" && r.ok ? (typeof r.payload?.sessions?.count === "number" ? "fresh" : "refreshing") : null;
        states.push(health ?? (r.ok ? r.payload?.cacheStatus?.status ?? "none" : "error"));
      }
      if (states.every((s) => s === "fresh" || s === "none")) {
        process.stderr.write(`warm: ${states.join(",")}\n`);
        break;
      }
      if (Date.now() > until) {
        process.stderr.write(`warm: still ${states.join(",")} at the deadline; capturing anyway\n`);
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  for (const c of cases) {
    let r;
    let took = "";
    try {
      if (c.handshake) r = await runHandshake(c);
      else {
        const conn = await sharedConn();
        const got = await conn.call(c.method, c.params);
        r = { case: c.name, method: c.method, params: c.params, ok: got.ok };
        took = got.ms;
        // Timings go to the log, not to the file, which must stay diffable.
        if (args.raw) r.ms = got.ms;
        if (got.ok) r.payload = c.shape && !args.raw ? skeleton(got.payload) : norm(got.payload, c.maxItems);
        else r.error = got.error;
      }
    } catch (e) {
      r = { case: c.name, ok: false, harnessError: String((e && e.message) || e) };
    }
    process.stderr.write(`${r.ok ? "ok " : "ERR"} ${String(took).padStart(6)} ms  ${c.name}${r.ok ? "" : "  " + JSON.stringify(r.error || r.close || r.harnessError || "").slice(0, 160)}\n`);
    results.push(r);
  }
  if (shared) shared.ws.close(1000);
  // An answer equal to an earlier case's (e.g. range 90d and all on a store of 30 days) is written
  // once; later cases say {"sameAs": "<case>"}.
  if (!args.raw) {
    const seen = new Map();
    for (const r of results) {
      if (!("payload" in r)) continue;
      const key = JSON.stringify(r.payload);
      if (key.length > 200 && seen.has(key)) r.payload = { sameAs: seen.get(key) };
      else seen.set(key, r.case);
    }
  }
  const out = { meta: { label: args.label || null, url, capturedAt: args.raw ? new Date().toISOString() : "<pinned>", cases: results.length }, results };
  writeFileSync(args.out, pretty(out) + "\n");
}

const watchdog = setTimeout(() => {
  console.error("capture.mjs: whole run over its deadline");
  process.exit(3);
}, Number(args.deadline || 900) * 1000);
main().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (e) => {
    console.error("capture.mjs:", (e && e.stack) || e);
    process.exit(1);
  },
);
