// The header (connection state, when the figures are from), the progress bar and busy marks, and
// the banner: one line per reason the figures may be missing, old or incomplete.
import { $, h, num } from "./dom.js";
import { fmtClock, fmtInt, fmtTime } from "./format.js";
import { exitText, workerUp } from "./health.js";
import { bootAt, prefs, state } from "./state.js";
import { currentKey, currentPageKey, describeView, shownSummary, summaryIsCurrent } from "./view.js";

export function renderHeader() {
  $("#conn").dataset.state = state.conn;
  $("#conn-text").textContent = state.connText;
  $("#updated").textContent = shownSummary() ? `Figures from ${fmtClock(state.summaryAt)}${state.fromSnapshot ? " (saved)" : ""}` : "";
}
export function setConn(conn, text) {
  state.conn = conn;
  state.connText = text;
  renderHeader();
  renderBanner();
}
export function renderBusy() {
  $("#progress").hidden = !state.loading;
  const figuresBusy = String(state.summaryKey !== currentKey());
  $("#totals").setAttribute("aria-busy", figuresBusy);
  $("#daily").setAttribute("aria-busy", figuresBusy);
  $("#sessions").setAttribute("aria-busy", String(state.rowsKey !== currentPageKey()));
  // Exports are of the selected view only: their file names say which.
  $("#export-sessions").disabled = !summaryIsCurrent() || state.exporting;
  $("#export-json").disabled = !summaryIsCurrent();
  $("#export-daily").disabled = !summaryIsCurrent();
}

/** The state dir when the last answer for all agents found none (an empty or wrong `--state-dir`). */
function emptyStateDir() {
  const st = state.status;
  let empty;
  if (summaryIsCurrent() && !prefs.agent && state.summary.diagnostics) empty = state.summary.diagnostics.agents === 0;
  else empty = !!st && !!st.stores && st.stores.scope === "all" && st.stores.agents === 0;
  if (!empty) return null;
  return (st && st.gateway && st.gateway.stateDir) || "the state directory";
}

function bannerLines() {
  const lines = [];
  const since = shownSummary() ? ` Showing the figures from ${fmtClock(state.summaryAt)}.` : "";
  if (state.authNeeded) {
    lines.push({ kind: "auth", level: "bad", text: state.authWhy || "This gateway requires a token.", action: ["Enter token", "token"] });
  } else if (state.mode === "ws" && state.conn !== "open" && (state.everConnected || Date.now() - bootAt > 4000)) {
    // No countdowns: the banner is a live region, and it should speak when things change.
    lines.push({
      kind: "conn",
      level: "warn",
      text: (state.everConnected ? "Connection to the gateway lost; reconnecting automatically." : "Cannot reach the gateway yet; retrying automatically.") + since,
    });
  }
  if (state.mode === "http" && !state.authNeeded) {
    lines.push({ kind: "http", level: "warn", text: "Live updates need a loopback or HTTPS connection to the gateway; over this one the figures refresh every 60 s." });
  }
  const dir = emptyStateDir();
  if (dir) {
    lines.push({
      kind: "no-agents",
      level: "warn",
      text: `No OpenClaw agents found in ${dir}. clawgate reads ${dir}/agents/<agent>/sessions (or each agent's SQLite store there); check --state-dir (or OPENCLAW_STATE_DIR).`,
    });
  }
  const w = state.status && state.status.worker;
  if (w && !workerUp(state.status) && state.conn !== "closed") {
    const exit = w.lastExit ? ` after ${exitText(w.lastExit)}` : "";
    lines.push({
      kind: "worker",
      level: w.state === "failed" ? "bad" : "warn",
      text: `The usage worker is ${w.state}${exit} (restarts: ${w.restarts || 0}).` + (since || " Figures appear as soon as it is ready."),
    });
  }
  const err = state.usageError;
  if (err && !err.local && !err.auth) {
    const retrying = state.retryAt > Date.now() ? " Retrying automatically." : "";
    const which = summaryIsCurrent() ? "" : ` for ${describeView(currentKey())}`;
    lines.push({
      kind: "error",
      level: err.retryable || err.code === "TIMEOUT" ? "warn" : "bad",
      text: `Could not load usage${which}: ${err.message}.${retrying}${since}`,
    });
  }
  const cs = summaryIsCurrent() && state.summary.cacheStatus;
  if (cs && cs.status && cs.status !== "fresh" && !state.fromSnapshot) {
    const text =
      cs.status === "stale"
        ? `These figures may be out of date: the usage worker did not answer in time (restarting or busy). Showing the last good figures, from ${fmtClock(state.summaryAt)}; newer ones follow automatically.`
        : `Figures are ${cs.status}: ${fmtInt(num(cs.pendingFiles))} files pending, ${fmtInt(num(cs.staleFiles))} stale, ${fmtInt(num(cs.cachedFiles))} up to date; they update when the worker catches up.`;
    lines.push({ kind: "stale", level: "warn", text });
  }
  if (state.fromSnapshot) lines.push({ kind: "snapshot", level: "warn", text: `Showing figures saved at ${fmtTime(state.snapshotAt)} until the gateway answers.` });
  if (!state.summary && !err && state.loading && Date.now() - state.loadStartedAt > 8000) {
    lines.push({ kind: "waiting", level: "warn", text: `Still waiting for the usage worker (${(w && w.state) || "unknown"})…` });
  }
  return lines;
}

/** Redraws the banner when its lines changed (it is a live region). Action buttons carry
 *  `data-action`; the page wires them. */
export function renderBanner() {
  const banner = $("#banner");
  const lines = bannerLines();
  const sig = JSON.stringify(lines.map((l) => [l.kind, l.text]));
  if (banner.dataset.sig === sig) return;
  banner.dataset.sig = sig;
  banner.hidden = lines.length === 0;
  banner.className = "banner" + (lines.some((l) => l.level === "bad") ? " bad" : "");
  banner.dataset.kinds = lines.map((l) => l.kind).join(" ");
  banner.replaceChildren(
    ...lines.map((l) =>
      h("p", { data: { kind: l.kind } }, l.text, l.action ? [" ", h("button", { type: "button", class: "btn small", data: { action: l.action[1] }, text: l.action[0] })] : null),
    ),
  );
}
