// The health panel: the gateway, the usage worker (state, memory against its cap, restarts, last
// exit) and the usage cache, from `status` every 2 s.
import { $, h, num } from "./dom.js";
import { fmtAgo, fmtBytes, fmtClock, fmtDuration, fmtInt, fmtLag, fmtTime } from "./format.js";
import { state } from "./state.js";
import { summaryIsCurrent } from "./view.js";

const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM" };

export const workerUp = (st) => !!st && !!st.worker && (st.worker.state === "ready" || st.worker.state === "busy");
export function exitText(e) {
  const how = e.signal ? SIGNALS[e.signal] || `signal ${e.signal}` : e.code !== null && e.code !== undefined ? `exit code ${e.code}` : "";
  return `${e.cause || "exit"}${how ? " (" + how + ")" : ""}`;
}
function badge(text, level, field) {
  return h("span", { class: "badge " + level, data: { field }, text });
}
function row(label, field, ...value) {
  return [h("dt", { text: label }), h("dd", { data: { field } }, ...value)];
}
/** The figures' badge: the cache status of the selected view's answer, never another view's. */
function figuresBadge() {
  if (summaryIsCurrent()) {
    const cs = state.summary.cacheStatus;
    return cs ? [cs.status, cs.status === "fresh" ? "ok" : "warn", cs] : ["unknown", "warn", null];
  }
  if (state.loading) return ["loading", "warn", null];
  return [state.summary ? "not loaded for this range" : "none yet", state.usageError ? "bad" : "warn", null];
}

export function renderHealth() {
  const box = $("#health-body");
  const st = state.status;
  if (!st) {
    box.replaceChildren(h("p", { class: "muted", text: state.statusError ? `Gateway status unavailable: ${state.statusError.message}` : "Waiting for the gateway…" }));
    return;
  }
  const g = st.gateway || {};
  const w = st.worker || {};
  const lag = st.eventLoop || {};
  const mem = w.memory || {};
  const cache = st.cache || {};
  const stale = state.conn === "closed" || !!state.statusError;
  const connText = state.mode === "http" ? "HTTP polling" : state.conn === "open" ? "live (WebSocket)" : state.connText;
  const wLevel = workerUp(st) ? "ok" : w.state === "failed" || w.state === "stopped" ? "bad" : "warn";
  const rss = num(w.rssBytes || mem.rssBytes);
  const cap = num(mem.capBytes);
  const ratio = cap ? rss / cap : 0;
  const meter = h("span", { class: "meter" + (ratio > 0.9 ? " full" : ratio > 0.7 ? " high" : ""), role: "meter", "aria-valuemin": "0", "aria-valuemax": String(cap || 1), "aria-valuenow": String(rss), "aria-label": "Worker memory against its cap" });
  const fill = h("span");
  fill.style.width = Math.min(100, Math.round(ratio * 100)) + "%";
  meter.append(fill);
  const byCause = Object.entries(w.restartsByCause || {}).filter(([, n]) => n > 0);
  const restarts = `${fmtInt(num(w.restarts))}${byCause.length ? " — " + byCause.map(([c, n]) => `${c} ${n}`).join(", ") : ""}`;
  const exit = w.lastExit;
  const open = $("#stderr-tail") && $("#stderr-tail").open;
  const [figures, figuresLevel, cs] = figuresBadge();
  const lagLevel = lag.degraded ? "warn" : "ok";
  const focusTail = !!(document.activeElement && document.activeElement.closest && document.activeElement.closest("#stderr-tail"));
  box.replaceChildren(
    h(
      "div",
      { class: "health" + (stale ? " stale" : "") },
      h("h3", { text: "Gateway" }),
      h(
        "dl",
        {},
        row("Connection", "connection", connText),
        row("Version", "gateway-version", g.version || "—"),
        row("PID", "gateway-pid", String(g.pid || "—")),
        row("Uptime", "gateway-uptime", fmtDuration(g.uptimeMs)),
        row("RSS", "gateway-rss", fmtBytes(g.rssBytes)),
        row("Event-loop lag", "lag", badge(lag.degraded ? "degraded" : "ok", lagLevel, "lag-state"), ` max ${fmtLag(lag.delayMaxMs)} · p99 ${fmtLag(lag.delayP99Ms)}`),
      ),
      h("h3", { text: "Usage worker" }),
      h(
        "dl",
        {},
        row("State", "worker-state-row", badge(w.state || "unknown", wLevel, "worker-state"), w.mode ? ` (${w.mode})` : ""),
        row("PID", "worker-pid", w.pid ? String(w.pid) : "—"),
        row("Uptime", "worker-uptime", fmtDuration(w.uptimeMs)),
        row("Memory", "worker-memory", `${fmtBytes(rss)}${cap ? " of " + fmtBytes(cap) + " cap" : ""}`, meter),
        row("Heap", "worker-heap", fmtBytes(w.heapBytes)),
        row("Jobs", "worker-jobs", fmtInt(num(w.jobsInFlight)) + " in flight"),
        row("Restarts", "worker-restarts", restarts),
        row("Last exit", "last-exit", exit ? `${exitText(exit)} · ${fmtTime(exit.atMs)} (${fmtAgo(exit.atMs)})` : "none"),
      ),
      exit && exit.stderrTail
        ? h("details", { id: "stderr-tail", open: open || null }, h("summary", { text: "Last worker stderr" }), h("pre", { class: "tail", text: String(exit.stderrTail) }))
        : null,
      h("h3", { text: "Usage cache" }),
      h(
        "dl",
        {},
        row(
          "Figures",
          "cache-status-row",
          badge(figures, figuresLevel, "cache-status"),
          cs ? ` ${fmtInt(num(cs.cachedFiles))} cached · ${fmtInt(num(cs.pendingFiles))} pending · ${fmtInt(num(cs.staleFiles))} stale` : "",
        ),
        row("Updated", "cache-updated", summaryIsCurrent() ? `${fmtClock(state.summaryAt)} (${fmtAgo(state.summaryAt)})` : "—"),
        row("Jobs running", "cache-jobs", `${fmtInt(num(cache.jobsRunning))} of ${fmtInt(num(cache.maxJobs))}`),
        row("Answers kept", "cache-answers", `${fmtInt(num(cache.answers))} (${fmtBytes(cache.bytes)})`),
      ),
      h("p", { class: "muted", data: { field: "status-at" }, text: `Status from ${fmtClock(state.statusAt)}${state.statusError ? " · last check failed: " + state.statusError.message : ""}` }),
    ),
  );
  if (focusTail && $("#stderr-tail summary")) $("#stderr-tail summary").focus();
  box.dataset.workerPid = String(w.pid || "");
  box.dataset.restarts = String(num(w.restarts));
  box.dataset.workerState = w.state || "";
  box.dataset.gatewayPid = String(g.pid || "");
}
