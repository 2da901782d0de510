// The breakdown panels: usage by model, provider, agent and channel, with each row's share.
// Every row is on the page: a panel grows with its rows rather than scroll inside itself (a
// 9th agent used to hide in such a box).
import { $, h, num } from "./dom.js";
import { fmtCost, fmtInt, fmtPct } from "./format.js";
import { state } from "./state.js";
import { shownSummary } from "./view.js";

function breakdown(boxId, rows, first, withCount) {
  const box = $(boxId);
  if (!rows || !rows.length) {
    const p = shownSummary();
    box.replaceChildren(h("p", { class: "muted", text: p ? "Nothing in this range." : state.usageError ? "No figures for this range yet." : "Waiting for data…" }));
    box.dataset.rows = "0";
    return;
  }
  const totalCost = rows.reduce((x, r) => x + num(r.totals && r.totals.totalCost), 0);
  const totalTokens = rows.reduce((x, r) => x + num(r.totals && r.totals.totalTokens), 0);
  const share = (r) => (totalCost > 0 ? num(r.totals.totalCost) / totalCost : totalTokens > 0 ? num(r.totals.totalTokens) / totalTokens : 0);
  box.replaceChildren(
    h(
      "table",
      { class: "data" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: first[0] }), withCount ? h("th", { scope: "col", class: "num", text: "Messages" }) : null, h("th", { scope: "col", class: "num", text: "Tokens" }), h("th", { scope: "col", class: "num", text: "Cost" }), h("th", { scope: "col", text: "Share" }))),
      h(
        "tbody",
        {},
        rows.map((r) => {
          const t = r.totals || {};
          const sh = share(r);
          const bar = h("span", { class: "share", "aria-hidden": "true" });
          bar.style.width = Math.max(1, Math.round(sh * 60)) + "px";
          return h("tr", {}, h("th", { scope: "row", text: first[1](r) }), withCount ? h("td", { class: "num", text: fmtInt(r.count) }) : null, h("td", { class: "num", text: fmtInt(t.totalTokens) }), h("td", { class: "num", text: fmtCost(t.totalCost) }), h("td", {}, bar, fmtPct(sh)));
        }),
      ),
    ),
  );
  box.dataset.rows = String(rows.length);
}

export function renderBreakdowns() {
  const p = shownSummary();
  const a = (p && p.aggregates) || {};
  breakdown("#by-model", a.byModel, ["Model", (r) => (r.provider ? r.provider + "/" : "") + (r.model || "unknown")], true);
  breakdown("#by-provider", a.byProvider, ["Provider", (r) => r.provider || "unknown"], true);
  breakdown("#by-agent", a.byAgent, ["Agent", (r) => r.agentId || "unknown"], false);
  breakdown("#by-channel", a.byChannel, ["Channel", (r) => r.channel || "unknown"], false);
}
