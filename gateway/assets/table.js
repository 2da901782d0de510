// The sessions table: one page of rows as the gateway sorted, searched and cut them
// (`sessions.usage` with `limit`, `offset`, `sortBy`, `sortDir`, `search`), and the pager.
import { $, $$, h, num } from "./dom.js";
import { fmtCost, fmtInt, fmtTime } from "./format.js";
import { prefs, state } from "./state.js";
import { currentKey } from "./view.js";

/** A table row from a `sessions.usage` session. */
export function toRow(sess) {
  const u = sess.usage || {};
  const models = Array.isArray(u.modelUsage) ? u.modelUsage : [];
  let model = sess.model ? sess.model : models[0] ? models[0].model || "" : "";
  if (!sess.model && models.length > 1) model += ` +${models.length - 1}`;
  return {
    sess,
    key: sess.key,
    label: sess.label || sess.displayName || sess.key,
    agent: sess.agentId || "",
    channel: sess.channel || (sess.origin && sess.origin.provider) || "",
    model,
    messages: num(u.messageCounts && u.messageCounts.total),
    tokens: num(u.totalTokens),
    cost: num(u.totalCost),
    last: num(sess.updatedAt) || num(u.lastActivity),
  };
}

/** The page to show: the selected view's; while another view loads, the previous one's (dimmed);
 *  none once loading the selected view failed. */
function shownRows() {
  if (!state.rows) return null;
  if (state.rowsView === currentKey()) return state.rows;
  return state.usageError ? null : state.rows;
}

function message(text) {
  $("#sessions-body").replaceChildren(h("tr", {}, h("td", { colspan: "8", class: "muted", text })));
}

export function renderSessions() {
  $$("#sessions-table th[data-sort]").forEach((th) =>
    th.setAttribute("aria-sort", th.dataset.sort === prefs.sort ? (prefs.dir > 0 ? "ascending" : "descending") : "none"),
  );
  const info = $("#page-info");
  const rows = shownRows();
  const page = state.pageInfo || { offset: 0, total: 0 };
  if (!rows) {
    message(state.usageError ? `No sessions loaded for this range: ${state.usageError.message}.` : state.summary ? "Loading sessions…" : "Waiting for data…");
    info.textContent = state.searchError;
    info.dataset.total = "";
    $("#prev").disabled = true;
    $("#next").disabled = true;
    return;
  }
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    frag.append(
      h(
        "tr",
        { data: { key: r.key } },
        h("td", {}, h("button", { type: "button", class: "linkish", title: r.key, data: { open: r.key }, text: r.label })),
        h("td", { text: r.agent }),
        h("td", { text: r.channel }),
        h("td", { text: r.model }),
        h("td", { class: "num", text: fmtInt(r.messages) }),
        h("td", { class: "num", text: fmtInt(r.tokens) }),
        h("td", { class: "num", text: fmtCost(r.cost) }),
        h("td", { text: fmtTime(r.last) }),
      ),
    );
  }
  const searched = state.rowsKey && JSON.parse(state.rowsKey).search;
  if (!rows.length) frag.append(h("tr", {}, h("td", { colspan: "8", class: "muted", text: searched ? "No session matches the search." : "No sessions in this range." })));
  const body = $("#sessions-body");
  body.replaceChildren(frag);
  body.dataset.query = state.rowsKey;
  body.dataset.order = `${page.sortBy}:${page.sortDir}`;
  body.dataset.offset = String(page.offset);
  const total = num(page.total);
  const first = num(page.offset);
  info.textContent = state.searchError
    ? state.searchError
    : total
      ? `${fmtInt(first + 1)}–${fmtInt(first + rows.length)} of ${fmtInt(total)} sessions${searched ? ` matching “${searched}”` : ""}`
      : "";
  info.dataset.total = String(total);
  $("#prev").disabled = first === 0;
  $("#next").disabled = first + rows.length >= total;
}
