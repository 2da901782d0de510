// OpenClaw's own Control UI (the `dist/control-ui` shipped in the pinned openclaw@2026.9.6 npm
// package, unmodified), served statically and pointed at a gateway with `?gatewayUrl=`, in headless
// Chromium (Debian's /usr/bin/chromium through playwright-core). Works against OpenClaw itself and
// against clawgate: the same script is the reference run and the compatibility check.
//
//   node control-ui.mjs --gateway ws://127.0.0.1:PORT --token T [--artifacts DIR] [--tz UTC]
//                       [--ui-dir DIR] [--preset All] [--deadline SECONDS] [--strip a.b,c.d]
//                       [--expect-text TEXT] [--served-by-gateway] [--page /agents]
//
// --served-by-gateway: load the UI from the gateway itself (http://HOST:PORT/, as users do; for
// clawgate in shield mode, relayed from the OpenClaw gateway behind it) instead of serving it
// statically; the page then connects to its own origin, with no gateway-switch dialog.
// --page PATH: also open this non-usage page of the UI and check that it renders (the text it
// shows and the methods it called are reported under `page`).
// `timings` (ms): `load` page load event, `hello` from navigation to hello-ok, `usage` from
// opening the Usage page to its first complete sessions.usage answer rendered.
//
// Steps: serve the UI on a free loopback port; open `/?gatewayUrl=ws://…#token=T`; confirm the
// "Switch to a different Gateway?" dialog the UI shows for a link that names another gateway; wait
// for hello-ok; go to the Usage page; pick the date preset (--preset, default All, so the figures do
// not depend on today's date); read the totals it shows and the sidebar's sessions; with
// --expect-text, check that the page shows TEXT (e.g. the agent's configured display name).
//
// Output: one JSON object on stdout (the last line):
//   {ok, connected, connect:{params, error, close}, checks:[{name, ok, detail}], totalsShown,
//    api (the totals of the sessions.usage answer the page rendered), sidebarSessions, banners,
//    methods:{name:{calls, ok, errors:{CODE:n}}}, consoleErrors, ignoredConsoleErrors, artifacts}
// Exit status 0 when every check passed, 1 otherwise, 2 on a harness failure or the deadline.
import { createServer } from "node:http";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
if (!args.gateway) {
  console.error("usage: node control-ui.mjs --gateway ws://127.0.0.1:PORT --token T [--artifacts DIR] [--tz UTC] [--preset All]");
  process.exit(2);
}
const gateway = args.gateway.replace(/\/+$/, "");
const uiDir = resolve(args["ui-dir"] || join(here, "..", "openclaw-gateway", "node_modules", "openclaw", "dist", "control-ui"));
const artifacts = resolve(args.artifacts || "artifacts");
const preset = args.preset || "All";
const chromiumPath = process.env.CLAWGATE_CHROMIUM || "/usr/bin/chromium";
mkdirSync(artifacts, { recursive: true });
if (!existsSync(join(uiDir, "index.html"))) {
  console.error(`no Control UI at ${uiDir}: install tests/openclaw-gateway (see its README.md)`);
  process.exit(2);
}

const report = {
  ok: false,
  gateway,
  connected: false,
  connect: {},
  checks: [],
  totalsShown: null,
  api: null,
  sidebarSessions: null,
  banners: [],
  methods: {},
  consoleErrors: [],
  ignoredConsoleErrors: [],
  artifacts: [],
};
const check = (name, ok, detail) => {
  report.checks.push({ name, ok: !!ok, detail: detail === undefined ? null : detail });
  return !!ok;
};

// ------------------------------------------------------------------ static server (SPA fallback)
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".svg": "image/svg+xml",
  ".json": "application/json",
  ".webmanifest": "application/manifest+json",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".woff": "font/woff",
  ".wasm": "application/wasm",
};
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  let file = join(uiDir, path);
  // Routes like /usage are the SPA's own: answer them with index.html, as OpenClaw's gateway does.
  if (!file.startsWith(uiDir) || !existsSync(file) || statSync(file).isDirectory()) {
    if (extname(path) && path !== "/") {
      // e.g. /control-ui-config.json, which only the gateway itself serves (behind its auth).
      (report.staticNotFound ||= []).push(path);
      res.writeHead(404).end();
      return;
    }
    file = join(uiDir, "index.html");
  }
  res.writeHead(200, { "content-type": TYPES[extname(file)] || "application/octet-stream", "cache-control": "no-store" });
  res.end(readFileSync(file));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const servedByGateway = "served-by-gateway" in args;
const uiOrigin = servedByGateway ? gateway.replace(/^ws/, "http") : `http://127.0.0.1:${server.address().port}`;
report.timings = {};

// ------------------------------------------------------------------ WS frame log
const pending = new Map(); // request id -> {method, params}
const answers = []; // {method, params, ok, error, payload}
const waiters = [];
function onAnswer(a) {
  answers.push(a);
  for (const w of waiters.slice()) if (w.pred(a)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(a));
}
function waitAnswer(pred, ms, what) {
  const seen = answers.find(pred);
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const w = { pred, resolve };
    waiters.push(w);
    setTimeout(() => {
      const i = waiters.indexOf(w);
      if (i >= 0) (waiters.splice(i, 1), reject(new Error(`no ${what} within ${ms} ms`)));
    }, ms);
  });
}
let connectClose = null;
function watchSocket(ws) {
  if (!ws.url().startsWith(gateway)) {
    report.sameOriginSocketAttempts = (report.sameOriginSocketAttempts || 0) + 1;
    return;
  }
  ws.on("framesent", (f) => {
    let m;
    try {
      m = JSON.parse(String(f.payload));
    } catch {
      return;
    }
    if (m.type !== "req") return;
    pending.set(m.id, { method: m.method, params: m.params });
    const s = (report.methods[m.method] ||= { calls: 0, ok: 0, errors: {} });
    s.calls++;
    if (m.method === "connect") {
      const p = JSON.parse(JSON.stringify(m.params));
      if (p.device) p.device = { ...Object.fromEntries(Object.keys(p.device).map((k) => [k, "<set>"])) };
      if (p.auth) p.auth = Object.fromEntries(Object.keys(p.auth).map((k) => [k, "<set>"]));
      report.connect.params = p;
    }
  });
  ws.on("framereceived", (f) => {
    let m;
    try {
      m = JSON.parse(String(f.payload));
    } catch {
      return;
    }
    if (m.type !== "res") return;
    const req = pending.get(m.id);
    if (!req) return;
    pending.delete(m.id);
    const s = report.methods[req.method];
    if (m.ok) s.ok++;
    else s.errors[m.error?.code || "?"] = (s.errors[m.error?.code || "?"] || 0) + 1;
    if (req.method === "connect") {
      report.connected ||= !!m.ok;
      if (!m.ok) report.connect.error = m.error;
      else report.connect.hello = { server: m.payload?.server, methods: m.payload?.features?.methods, policy: m.payload?.policy, auth: { role: m.payload?.auth?.role, scopes: m.payload?.auth?.scopes } };
    }
    onAnswer({ method: req.method, params: req.params, ok: !!m.ok, error: m.error, payload: m.ok ? m.payload : undefined });
  });
  ws.on("close", () => {
    if (!report.connected) connectClose = connectClose || "closed before hello-ok";
  });
}

// Noise that comes from serving the UI from a static origin rather than from the gateway itself
// (the UI first tries a socket on its own origin, and fetches gateway HTTP assets cross-origin). It
// is there against OpenClaw too, so it is reported apart and does not fail the run.
const staticNoise = [/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/' failed/, /blocked by CORS policy/, /Failed to load resource: net::ERR_FAILED/];
function onConsole(m) {
  if (m.type() !== "error") return;
  const text = m.text();
  // A 404 console line carries no URL: it is the static server's own when that server answered 404
  // at least as many times as such lines were seen.
  const knownNotFound =
    (report.staticNotFound || []).length + (report.avatarNotFound || 0) + (report.catalogIconNotFound || 0);
  const static404 = /status of 404/.test(text) && knownNotFound > report.ignoredConsoleErrors.filter((t) => /status of 404/.test(t)).length;
  const own = static404 || text.includes(uiOrigin.replace("http", "ws")) || staticNoise.some((re) => re.test(text));
  (own ? report.ignoredConsoleErrors : report.consoleErrors).push(text.slice(0, 400));
}

// ------------------------------------------------------------------ page helpers
const parseCompact = (s) => {
  const m = String(s).replace(/[$,\s]/g, "").match(/^(-?[\d.]+)([KMB]?)$/i);
  if (!m) return null;
  return Number(m[1]) * { "": 1, K: 1e3, M: 1e6, B: 1e9 }[m[2].toUpperCase()];
};
/** True when `shown` (as the UI prints it, e.g. "1.6M", "$0.46") is `value` rounded as printed. */
function sameAsShown(shown, value) {
  const n = parseCompact(shown);
  if (n === null || typeof value !== "number") return false;
  const digits = (String(shown).split(".")[1] || "").replace(/[^\d]/g, "").length;
  const unit = { K: 1e3, M: 1e6, B: 1e9 }[String(shown).trim().slice(-1).toUpperCase()] || 1;
  return Math.abs(n - value) <= 0.5 * unit * 10 ** -digits + 1e-9;
}
async function shot(page, name) {
  const path = join(artifacts, name);
  await page.screenshot({ path, fullPage: false }).catch(() => {});
  report.artifacts.push(path);
}
async function metrics(page) {
  return page.evaluate(() => {
    const out = {};
    for (const b of document.querySelectorAll(".usage-header-metrics .usage-metric-badge")) {
      const v = b.querySelector("strong")?.textContent.trim();
      const label = b.textContent.replace(v || "", "").trim().toLowerCase();
      out[label] = v;
    }
    const inRange = document.body.innerText.match(/(\d[\d,]*) sessions? in range/);
    out.sessionsInRange = inRange ? Number(inRange[1].replace(/,/g, "")) : null;
    return out;
  });
}
async function banners(page) {
  return page.evaluate(() =>
    Array.from(new Set(document.body.innerText.split("\n").map((l) => l.trim()).filter((l) => /unavailable|not available|failed|error:|unsupported|unknown method|could not/i.test(l) && l.length < 300))).slice(0, 20),
  );
}

/** Opens a non-usage page of the UI and checks it rendered: text beyond the shell, and the
 * methods it called answered. */
async function openPage(page, path) {
  const before = answers.length;
  const opened = Date.now();
  await page.evaluate((p) => {
    history.pushState({}, "", p);
    dispatchEvent(new PopStateEvent("popstate"));
  }, path);
  await page.waitForTimeout(3000); // its calls and render settle
  const called = answers.slice(before);
  const text = (await page.evaluate(() => document.querySelector("main")?.innerText || document.body.innerText)).split("\n").map((l) => l.trim()).filter(Boolean);
  report.page = { path, ms: Date.now() - opened, called: called.map((a) => `${a.method}:${a.ok ? "ok" : a.error?.code}`), text: text.slice(0, 25) };
  await shot(page, `control-ui-${path.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "")}.png`);
  check(`the ${path} page renders`, location(page) === path && text.length > 3 && called.some((a) => a.ok), { methods: report.page.called.slice(0, 20), lines: text.length });
}
function location(page) {
  return new URL(page.url()).pathname;
}

// ------------------------------------------------------------------ the run
async function run() {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, timezoneId: args.tz || "UTC", locale: "en-US" });
    const page = await context.newPage();
    page.on("console", onConsole);
    page.on("pageerror", (e) => report.consoleErrors.push("pageerror: " + e.message.slice(0, 400)));
    page.on("websocket", watchSocket);
    if (args.strip) {
      // Diagnosis aid, not for the compatibility verdict: removes connect fields (dot paths, e.g.
      // client.buildId,client.timeZone) between the page and the gateway, to see what the UI does
      // past a connect the gateway would otherwise refuse.
      const paths = args.strip.split(",").filter(Boolean).map((p) => p.split("."));
      report.stripped = args.strip;
      await page.routeWebSocket(new RegExp("^" + gateway.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "/?$"), (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((m) => {
          try {
            const f = JSON.parse(m);
            if (f.method === "connect" && f.params) {
              for (const p of paths) {
                const parent = p.slice(0, -1).reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), f.params);
                if (parent && typeof parent === "object") delete parent[p[p.length - 1]];
              }
              m = JSON.stringify(f);
            }
          } catch {
            // not JSON: pass on as it is
          }
          server.send(m);
        });
        server.onMessage((m) => ws.send(m));
        ws.onClose((code, reason) => server.close({ code, reason }));
        server.onClose((code, reason) => ws.close({ code, reason }));
      });
    }
    page.on("response", (r) => {
      if (r.status() >= 400) (report.failedRequests ||= []).push(`${r.status()} ${r.url().slice(0, 200)}`);
      // The owner's avatar, when none is configured: OpenClaw answers 404 itself, so the UI's
      // console line for it is not the gateway's fault (seen against OpenClaw directly too).
      if (r.status() === 404 && /\/api\/users\/[^/]+\/avatar(\?|$)/.test(new URL(r.url()).pathname + "?")) report.avatarNotFound = (report.avatarNotFound || 0) + 1;
      // A provider icon from the model catalog (LM Studio's, from cdn.simpleicons.org): OpenClaw
      // fetches it from the internet and answers 404 itself where there is none (CI machines).
      // Whether the UI asks for it before the checks end depends on timing.
      if (r.status() === 404 && new URL(r.url()).pathname.startsWith("/__openclaw__/catalog-icon/")) report.catalogIconNotFound = (report.catalogIconNotFound || 0) + 1;
    });

    const token = `#token=${encodeURIComponent(args.token || "")}`;
    const url = servedByGateway ? `${uiOrigin}/${token}` : `${uiOrigin}/?gatewayUrl=${encodeURIComponent(gateway)}${token}`;
    const navigated = Date.now();
    await page.goto(url, { waitUntil: "load" });
    report.timings.load = Date.now() - navigated;
    // The UI asks before it follows a link to another gateway.
    if (!servedByGateway) await page.getByRole("button", { name: /^Switch to / }).click({ timeout: 30000 });
    const hello = await waitAnswer((a) => a.method === "connect", 30000, "connect answer").catch((e) => ({ ok: false, error: { harness: e.message } }));
    report.timings.hello = Date.now() - navigated;
    if (!hello.ok) {
      report.connect.error ||= hello.error;
      report.connect.close = connectClose;
      await page.waitForTimeout(1500); // let the UI render its error screen for the screenshot
      report.banners = await banners(page);
      report.uiText = (await page.evaluate(() => document.body.innerText)).split("\n").filter(Boolean).slice(0, 30);
      await shot(page, "control-ui-connect.png");
      check("the Control UI connects (hello-ok)", false, report.connect.error);
      return;
    }
    check("the Control UI connects (hello-ok)", true);

    // The Usage page (an SPA route: /usage).
    const usageOpened = Date.now();
    await page.evaluate(() => {
      history.pushState({}, "", "/usage");
      dispatchEvent(new PopStateEvent("popstate"));
    });
    await waitAnswer((a) => a.method === "sessions.usage", 60000, "sessions.usage answer");
    await page.getByRole("button", { name: new RegExp(`^\\s*${preset}\\s*$`) }).first().click({ timeout: 15000 });
    const start = answers.length;
    // The preset's own load. Right after start-up a gateway may answer with cacheStatus
    // "refreshing" (partial totals); the UI asks again until the cache is fresh, so the figures to
    // compare are those of the first complete answer.
    const usage = await waitAnswer(
      (a) => answers.indexOf(a) >= start && a.method === "sessions.usage" && (!a.ok || a.payload?.cacheStatus?.status !== "refreshing"),
      90000,
      `a complete sessions.usage answer for preset ${preset}`,
    );
    report.usageAnswers = answers.filter((a) => a.method === "sessions.usage").map((a) => (a.ok ? a.payload?.cacheStatus?.status || "ok" : a.error?.code));
    report.usageParams = usage.params;
    if (!usage.ok) {
      check("sessions.usage answers the Usage page", false, usage.error);
    } else {
      const t = usage.payload.totals || {};
      report.api = { totalTokens: t.totalTokens, totalCost: t.totalCost, sessionCount: usage.payload.aggregates?.sessionCount, rows: usage.payload.sessions?.length, cacheStatus: usage.payload.cacheStatus?.status };
      await page
        .waitForFunction((n) => (document.body.innerText.match(/(\d[\d,]*) sessions? in range/) || [])[1]?.replace(/,/g, "") === String(n), report.api.rows, { timeout: 15000, polling: 100 })
        .catch(() => {});
      // The page re-renders after the answer arrives: poll (every 200 ms, up to 15 s) until the
      // figures shown are this answer's, then judge what is shown at that point.
      let m = await metrics(page);
      for (let i = 0; i < 75 && !(sameAsShown(m.tokens, t.totalTokens) && sameAsShown(m.cost, t.totalCost)); i++) {
        await page.waitForTimeout(200);
        m = await metrics(page);
      }
      report.totalsShown = m;
      report.timings.usage = Date.now() - usageOpened;
      check("tokens shown = sessions.usage totals.totalTokens", sameAsShown(m.tokens, t.totalTokens), { shown: m.tokens, api: t.totalTokens });
      check("cost shown = sessions.usage totals.totalCost", sameAsShown(m.cost, t.totalCost), { shown: m.cost, api: t.totalCost });
      check("sessions shown = sessions.usage rows", Number(m.sessions) === report.api.rows && m.sessionsInRange === report.api.rows, { shown: m.sessions, inRange: m.sessionsInRange, api: report.api.rows });
    }
    await page.waitForTimeout(1000); // late answers (usage.status banner) settle
    report.banners = await banners(page);
    await shot(page, "control-ui-usage.png");

    // The sidebar lists the current agent's sessions from sessions.list.
    const list = await waitAnswer((a) => a.method === "sessions.list", 30000, "sessions.list answer").catch(() => null);
    const rows = list?.ok ? (list.payload.sessions || []).length : null;
    if (rows) await page.waitForSelector(".sidebar-recent-session[data-session-key]", { timeout: 10000 }).catch(() => {});
    report.sidebarSessions = await page.$$eval(".sidebar-recent-session[data-session-key]", (els) => els.map((e) => e.dataset.sessionKey));
    check("the sidebar lists sessions", list?.ok && report.sidebarSessions.length > 0, { sessionsList: list ? (list.ok ? `${rows} rows` : list.error) : "not called", sidebar: report.sidebarSessions.length });
    if (args["expect-text"]) {
      const want = args["expect-text"];
      const shown = await page
        .waitForFunction((t) => document.body.innerText.includes(t), want, { timeout: 10000, polling: 200 })
        .then(() => true, () => false);
      check(`the page shows "${want}"`, shown);
    }
    if (args.page) await openPage(page, args.page);
    check("no console errors", report.consoleErrors.length === 0, report.consoleErrors.slice(0, 10));
  } finally {
    await browser.close().catch(() => {});
  }
}

const deadline = setTimeout(() => {
  check("finished within the deadline", false, Number(args.deadline || 150));
  finish(2);
}, Number(args.deadline || 150) * 1000);
function finish(code) {
  clearTimeout(deadline);
  server.close();
  const failedMethods = Object.entries(report.methods).filter(([, s]) => Object.keys(s.errors).length);
  report.methodsFailing = Object.fromEntries(failedMethods.map(([m, s]) => [m, s.errors]));
  report.ok = report.checks.length > 0 && report.checks.every((c) => c.ok);
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(code ?? (report.ok ? 0 : 1));
}
run().then(
  () => finish(),
  (e) => {
    check("harness ran to the end", false, String((e && e.stack) || e).slice(0, 1000));
    finish(2);
  },
);
