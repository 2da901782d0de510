// The budgets panel: one bar per configured budget (`status.budgets`, refreshed by the gateway
// from the worker): spend filled against the budget's mark, and for a month a tick at the
// month-end forecast. The bar spans the budget, or the spend once it is over (the mark then moves
// left); a forecast beyond that sits at the right end, dashed, its figure in the words beside it.
// Hidden when no budget is configured.
import { $, h, num } from "./dom.js";
import { fmtCost } from "./format.js";
import { state } from "./state.js";

export function renderBudgets() {
  const box = $("#budgets");
  const b = state.status && state.status.budgets;
  const items = (b && b.items) || [];
  box.hidden = items.length === 0;
  if (!items.length) return box.replaceChildren();
  const failed = b.error ? [h("p", { class: "muted", data: { field: "budget-error" }, text: `Last refresh failed: ${b.error}` })] : [];
  box.replaceChildren(h("h2", { text: "Budgets" }), h("div", { class: "budget-list" }, ...items.map(budgetRow)), ...failed);
}

function budgetRow(it) {
  const known = typeof it.spendUsd === "number" && isFinite(it.spendUsd);
  const spend = known ? it.spendUsd : 0;
  const budget = num(it.budgetUsd);
  const forecast = typeof it.forecastUsd === "number" && isFinite(it.forecastUsd) ? it.forecastUsd : null;
  const scale = Math.max(budget, spend) || 1;
  const pct = (v) => Math.min(100, Math.max(0, (v / scale) * 100)).toFixed(2) + "%";
  const level = it.level === "exceeded" ? "bad" : it.level === "warning" || it.forecastOver ? "warn" : "ok";
  const who = it.agent === "all" ? "all agents" : it.agent;
  const when = it.period === "month" ? "This month" : "Today";
  const fill = h("span", { class: "fill" });
  fill.style.width = pct(spend);
  const mark = h("span", { class: "limit", title: `Budget ${fmtCost(budget)}` });
  mark.style.left = pct(budget);
  const tick = forecast === null ? null : h("span", { class: "forecast" + (forecast > scale ? " beyond" : ""), title: `Month-end forecast ${fmtCost(forecast)}` });
  if (tick) tick.style.left = pct(forecast);
  const bar = h(
    "span",
    { class: "budget-bar " + level, role: "meter", "aria-valuemin": "0", "aria-valuemax": String(budget), "aria-valuenow": String(spend), "aria-label": `${when}, ${who}: spend against the budget` },
    fill,
    mark,
    tick,
  );
  const words = known
    ? `${fmtCost(spend)} of ${fmtCost(budget)} (${Math.round(num(it.ratio) * 100)}%)` + (forecast === null ? "" : ` · forecast ${fmtCost(forecast)} by month end`)
    : `${fmtCost(budget)} · spend not known yet`;
  const verdict = it.level === "exceeded" ? "over budget" : it.level === "warning" ? "over 80%" : it.forecastOver ? "forecast over" : "within";
  return h(
    "div",
    { class: "budget", data: { period: it.period || "", agent: it.agent || "", budget: String(budget), spend: known ? String(spend) : "", forecast: forecast === null ? "" : String(forecast), level: it.level || "" } },
    h("span", { class: "budget-name", text: `${when} · ${who}` }),
    bar,
    h("span", { class: "budget-figures" }, words, " ", h("span", { class: "badge " + level, data: { field: "budget-level" }, text: verdict })),
  );
}
