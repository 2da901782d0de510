// Downloads of the selected view: every session matching the search as CSV (fetched page by page,
// since the page holds one), the daily figures as CSV, and the shown answer as JSON.
import { $, h, num } from "./dom.js";
import { renderBusy } from "./banner.js";
import { dailyRows } from "./chart.js";
import { csvNumber, fmtInt } from "./format.js";
import { httpCall } from "./protocol.js";
import { prefs, state } from "./state.js";
import { toRow } from "./table.js";
import { viewParams, viewRange } from "./view.js";

/** Rows per request of the sessions export: a row is 1-4 KB of JSON, so an answer stays a few MB,
 *  within the worker's answer budget, however many sessions the store holds. */
const EXPORT_PAGE = 1000;

function csvCell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return csvNumber(v);
  let text = String(v);
  if (/^[=+\-@\t\r]/.test(text)) text = "'" + text; // no formulas from session labels
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}
const csv = (rows) => rows.map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}
function fileStem() {
  const [start, end] = viewRange();
  return `clawgate-${prefs.agent || "all"}-${start}_${end}`;
}
const iso = (ms) => (ms ? new Date(ms).toISOString() : "");

const SESSION_FIELDS = ["key", "label", "sessionId", "agentId", "channel", "modelProvider", "model", "updatedAt", "firstActivity", "lastActivity", "messages", "errors", "input", "output", "cacheRead", "cacheWrite", "totalTokens", "totalCost"];
function sessionLine(sess) {
  const r = toRow(sess);
  const u = sess.usage || {};
  return [r.key, r.label, sess.sessionId, r.agent, r.channel, sess.modelProvider, r.model, iso(sess.updatedAt), iso(u.firstActivity), iso(u.lastActivity), r.messages, num(u.messageCounts && u.messageCounts.errors), num(u.input), num(u.output), num(u.cacheRead), num(u.cacheWrite), r.tokens, r.cost];
}

/**
 * Every session of the view that matches the search, in the table's order. Pages go over HTTP,
 * not the WebSocket: the gateway re-runs WebSocket queries to push updates, and a one-off export
 * should not leave dozens of them behind. A session that moves between pages while the export
 * runs (new activity) is written once.
 */
export async function exportSessions() {
  if (state.exporting) return;
  state.exporting = true;
  renderBusy();
  const status = $("#export-status");
  const query = Object.assign(viewParams(), { sortBy: prefs.sort, sortDir: prefs.dir > 0 ? "asc" : "desc" });
  if (state.search) query.search = state.search;
  const name = fileStem() + "-sessions.csv";
  const seen = new Set();
  const body = [];
  try {
    let total = null;
    for (let offset = 0; total === null || offset < total; ) {
      status.textContent = total === null ? "Exporting sessions…" : `Exporting sessions: ${fmtInt(body.length)} of ${fmtInt(total)}…`;
      const p = await httpCall("sessions.usage", Object.assign({}, query, { limit: EXPORT_PAGE, offset }), 60000);
      const sessions = Array.isArray(p.sessions) ? p.sessions : [];
      total = p.page ? num(p.page.total) : sessions.length;
      for (const sess of sessions) {
        if (seen.has(sess.key)) continue;
        seen.add(sess.key);
        body.push(sessionLine(sess));
      }
      if (!sessions.length) break;
      offset += sessions.length;
    }
    download(name, "text/csv", csv([SESSION_FIELDS, ...body]));
    status.textContent = `Exported ${fmtInt(body.length)} sessions.`;
  } catch (e) {
    status.textContent = `Sessions export failed: ${e.message}.`;
  } finally {
    state.exporting = false;
    renderBusy();
  }
}

/** Forgets the last export's outcome (the view it was of is no longer shown). */
export function clearExportStatus() {
  if (!state.exporting) $("#export-status").textContent = "";
}

export function exportDaily() {
  const { days } = dailyRows();
  const fields = ["input", "output", "cacheRead", "cacheWrite", "totalTokens", "totalCost", "inputCost", "outputCost", "cacheReadCost", "cacheWriteCost"];
  const body = days.filter((d) => num(d.totalTokens) || num(d.totalCost)).map((d) => [d.date, ...fields.map((f) => num(d[f]))]);
  download(fileStem() + "-daily.csv", "text/csv", csv([["date", ...fields], ...body]));
}

export function exportJson() {
  const doc = { exportedAt: new Date().toISOString(), gateway: location.host, query: viewParams(), figuresAt: iso(state.summaryAt), sessionsUsage: state.summary };
  download(fileStem() + ".json", "application/json", JSON.stringify(doc, null, 2));
}
