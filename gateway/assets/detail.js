// The session detail dialog: a session's figures, its models, and its usage over time
// (`sessions.usage.timeseries`, loaded when the dialog opens and after `usage.updated`).
import { $, h } from "./dom.js";
import { fmtCost, fmtDuration, fmtInt, fmtTime } from "./format.js";
import { TYPES, TYPE_LABEL, renderTimeseries } from "./chart.js";
import { call } from "./protocol.js";
import { state } from "./state.js";

function fact(label, value) {
  return h("div", {}, h("dt", { text: label }), h("dd", { text: value }));
}

export function openDetail(key) {
  state.detailKey = key;
  state.detailRow = (state.rows || []).find((r) => r.key === key) || null;
  state.series = "cumulative";
  refreshDetail();
  const dlg = $("#detail");
  if (!dlg.open) dlg.showModal();
  loadTimeseries(key);
}

/** Redraws the facts from the newest row of this session (the page may no longer hold it after
 *  a refresh or a page change: then the figures it was opened with stay). */
export function refreshDetail() {
  const row = (state.rows || []).find((r) => r.key === state.detailKey) || state.detailRow;
  if (!row || row.key !== state.detailKey) return;
  state.detailRow = row;
  const sess = row.sess;
  const u = sess.usage || {};
  const mc = u.messageCounts || {};
  $("#detail-title").textContent = row.label;
  const lat = u.latency;
  const facts = h(
    "dl",
    { class: "facts" },
    fact("Key", sess.key),
    fact("Session id", sess.sessionId || "—"),
    fact("Agent", row.agent || "—"),
    fact("Channel", row.channel || "—"),
    fact("Chat type", sess.chatType || "—"),
    fact("Model", row.model || "—"),
    fact("First activity", fmtTime(u.firstActivity)),
    fact("Last activity", fmtTime(u.lastActivity || sess.updatedAt)),
    fact("Duration", fmtDuration(u.durationMs)),
    fact("Messages", `${fmtInt(mc.total)} (${fmtInt(mc.user)} user, ${fmtInt(mc.assistant)} assistant)`),
    fact("Tool calls", fmtInt(mc.toolCalls)),
    fact("Errors", fmtInt(mc.errors)),
    ...TYPES.map((t) => fact(TYPE_LABEL[t] + " tokens", fmtInt(u[t]))),
    fact("Total tokens", fmtInt(u.totalTokens)),
    fact("Cost", fmtCost(u.totalCost)),
    fact("Latency avg / p95", lat ? `${fmtInt(lat.avgMs)} ms / ${fmtInt(lat.p95Ms)} ms` : "—"),
  );
  const models = Array.isArray(u.modelUsage) && u.modelUsage.length ? h("div", { class: "scroll" }, modelTable(u.modelUsage)) : "";
  $("#detail-body").replaceChildren(facts, models);
}

function modelTable(rows) {
  return h(
    "table",
    { class: "data" },
    h("caption", { class: "sr-only", text: "Models used in this session" }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Model" }), h("th", { scope: "col", class: "num", text: "Calls" }), h("th", { scope: "col", class: "num", text: "Tokens" }), h("th", { scope: "col", class: "num", text: "Cost" }))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("th", { scope: "row", text: (r.provider ? r.provider + "/" : "") + (r.model || "unknown") }), h("td", { class: "num", text: fmtInt(r.count) }), h("td", { class: "num", text: fmtInt(r.totals && r.totals.totalTokens) }), h("td", { class: "num", text: fmtCost(r.totals && r.totals.totalCost) })))),
  );
}

export async function loadTimeseries(key) {
  const box = $("#ts-chart");
  const cached = state.timeseries.get(key);
  if (cached) return renderTimeseries(cached);
  // Keep the chart of this session on screen while it reloads; say so for another one.
  if (box.dataset.key !== key || box.dataset.state !== "ready") {
    box.dataset.state = "loading";
    box.replaceChildren(h("p", { class: "empty muted", text: "Loading usage over time…" }));
  }
  box.dataset.key = key;
  try {
    const ts = await call("sessions.usage.timeseries", { key }, 30000);
    state.timeseries.set(key, ts);
    if (state.detailKey === key) renderTimeseries(ts);
  } catch (e) {
    if (state.detailKey !== key) return;
    box.dataset.state = "error";
    box.replaceChildren(
      h("p", { class: "empty muted" }, `Could not load usage over time: ${e.message}. `, h("button", { type: "button", class: "btn small", onclick: () => loadTimeseries(key), text: "Retry" })),
    );
  }
}

/** Shows the series chosen with the Cumulative / Per call toggle. */
export function showSeries(series) {
  state.series = series === "turn" ? "turn" : "cumulative";
  const ts = state.timeseries.get(state.detailKey);
  if (ts) renderTimeseries(ts);
  else if (state.detailKey) loadTimeseries(state.detailKey);
}
