// Charts drawn as SVG: the daily usage chart (with its table form) and a session's usage over
// time in the detail dialog.
import { $, $$, h, num, s } from "./dom.js";
import { compactFmt, fmtCompact, fmtCost, fmtInt, fmtTime } from "./format.js";
import { prefs, state } from "./state.js";
import { DAY_MS, addDays, dayMs, shownSummary, validDate, viewRange } from "./view.js";

export const TYPES = ["input", "output", "cacheRead", "cacheWrite"];
export const TYPE_LABEL = { input: "Input", output: "Output", cacheRead: "Cache read", cacheWrite: "Cache write" };

/** The days of the shown answer, oldest first, idle days filled in; `typed`: split by token type. */
export function dailyRows() {
  const p = shownSummary();
  if (!p) return { days: [], typed: true };
  const a = p.aggregates || {};
  let days;
  let typed = true;
  if (Array.isArray(a.costDaily) && a.costDaily.length) days = a.costDaily.slice();
  else {
    typed = false;
    days = (a.daily || []).map((d) => ({ date: d.date, totalTokens: num(d.tokens), totalCost: num(d.cost) }));
  }
  days.sort((x, y) => (x.date < y.date ? -1 : x.date > y.date ? 1 : 0));
  // Fill the gaps so idle days show as idle (the whole range, or from the first active day).
  const [start, end] = viewRange();
  const first = prefs.preset === "all" || !validDate(start) ? days[0] && days[0].date : start;
  if (first && validDate(end) && (dayMs(end) - dayMs(first)) / DAY_MS <= 400) {
    const byDate = new Map(days.map((d) => [d.date, d]));
    const filled = [];
    for (let d = first; d <= end; d = addDays(d, 1)) filled.push(byDate.get(d) || { date: d });
    for (const d of days) if (d.date > end || d.date < first) filled.push(d);
    filled.sort((x, y) => (x.date < y.date ? -1 : 1));
    days = filled;
  }
  return { days, typed };
}

/** The smallest axis maximum at or above `v` whose quarters are round numbers. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const step = v / 4;
  const p = Math.pow(10, Math.floor(Math.log10(step)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p * 4 >= v) return m * p * 4;
  return 40 * p;
}

export function renderDaily() {
  const box = $("#chart");
  const { days, typed } = dailyRows();
  const cost = prefs.measure === "cost";
  $$("[data-measure]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.measure === prefs.measure)));
  const idle = days.every((d) => !num(d.totalTokens) && !num(d.totalCost));
  if (idle) {
    const why = shownSummary() ? "No usage in this range." : state.usageError ? "No figures for this range yet." : "Waiting for data…";
    box.replaceChildren(h("p", { class: "empty muted", text: why }));
    box.dataset.days = "0";
    renderDailyTable(days, typed);
    return;
  }
  const field = (type) => (cost ? type + "Cost" : type);
  const stacks = days.map((d) => (typed ? TYPES.map((t) => num(d[field(t)])) : [num(cost ? d.totalCost : d.totalTokens)]));
  const totals = stacks.map((st) => st.reduce((x, y) => x + y, 0));
  const max = niceMax(Math.max(...totals));
  const width = Math.max(280, Math.round(box.clientWidth || 640));
  const height = width < 500 ? 200 : 240;
  const m = { l: cost ? 58 : 50, r: 6, t: 8, b: 24 };
  const pw = width - m.l - m.r;
  const ph = height - m.t - m.b;
  const bw = pw / days.length;
  const gap = bw > 5 ? Math.min(2, bw * 0.2) : 0;
  const fmt = cost ? (v) => (v >= 1000 ? "$" + compactFmt.format(v) : fmtCost(v)) : fmtCompact;
  const peak = totals.indexOf(Math.max(...totals));
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": `Daily ${cost ? "cost" : "tokens"} from ${days[0].date} to ${days[days.length - 1].date}; peak ${fmt(totals[peak])} on ${days[peak].date}.`,
  });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = m.t + ph - (ph * i) / 4;
    svg.append(s("line", { class: "gridline", x1: m.l, x2: width - m.r, y1: y, y2: y }));
    svg.append(s("text", { class: "axis", x: m.l - 6, y: y + 4, "text-anchor": "end", text: fmt(v) }));
  }
  const labelEvery = Math.max(1, Math.ceil(62 / bw));
  days.forEach((d, i) => {
    const x = m.l + i * bw;
    const g = s("g", { class: "day" });
    const detail = typed ? TYPES.map((t, k) => `${TYPE_LABEL[t]} ${cost ? fmtCost(stacks[i][k]) : fmtInt(stacks[i][k])}`).join(", ") : "";
    g.append(s("title", { text: `${d.date}: ${cost ? fmtCost(totals[i]) : fmtInt(totals[i]) + " tokens"}${detail ? " (" + detail + ")" : ""}` }));
    let y = m.t + ph;
    stacks[i].forEach((v, k) => {
      if (!(v > 0)) return;
      const hgt = Math.max(0.5, (v / max) * ph);
      y -= hgt;
      g.append(s("rect", { class: typed ? TYPES[k] : "total", x: x + gap / 2, y, width: Math.max(1, bw - gap), height: hgt }));
    });
    // A transparent full-height target so thin bars are easy to hover.
    g.append(s("rect", { x, y: m.t, width: bw, height: ph, fill: "transparent" }));
    svg.append(g);
    if (i % labelEvery === 0) {
      svg.append(s("text", { class: "axis", x: x + bw / 2, y: height - 6, "text-anchor": "middle", text: d.date.slice(5) }));
    }
  });
  box.replaceChildren(svg);
  box.dataset.days = String(days.length);
  renderDailyTable(days, typed);
}

function renderDailyTable(days, typed) {
  const box = $("#daily-table");
  if (!$("#daily-table-box").open) {
    box.replaceChildren();
    return;
  }
  const cols = typed
    ? [["Date", (d) => d.date], ...TYPES.map((t) => [TYPE_LABEL[t], (d) => fmtInt(num(d[t])), true]), ["Tokens", (d) => fmtInt(num(d.totalTokens)), true], ["Cost", (d) => fmtCost(num(d.totalCost)), true]]
    : [["Date", (d) => d.date], ["Tokens", (d) => fmtInt(num(d.totalTokens)), true], ["Cost", (d) => fmtCost(num(d.totalCost)), true]];
  box.replaceChildren(
    h(
      "table",
      { class: "data" },
      h("thead", {}, h("tr", {}, cols.map(([label, , n]) => h("th", { scope: "col", class: n ? "num" : null, text: label })))),
      h("tbody", {}, days.filter((d) => num(d.totalTokens) || num(d.totalCost)).map((d) => h("tr", {}, cols.map(([, get, n]) => h("td", { class: n ? "num" : null, text: get(d) }))))),
    ),
  );
}

/** `sessions.usage.timeseries` points: cumulative tokens as a line, or each call's tokens as bars. */
export function renderTimeseries(ts) {
  const box = $("#ts-chart");
  $$("[data-series]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.series === state.series)));
  const points = (ts && Array.isArray(ts.points) ? ts.points : []).filter((p) => typeof p.timestamp === "number");
  box.dataset.state = "ready";
  box.dataset.points = String(points.length);
  if (!points.length) {
    box.replaceChildren(h("p", { class: "empty muted", text: "No model calls with usage in this session." }));
    return;
  }
  const width = Math.max(260, Math.round(box.clientWidth || 600));
  const height = 200;
  const m = { l: 50, r: 8, t: 8, b: 24 };
  const pw = width - m.l - m.r;
  const ph = height - m.t - m.b;
  const t0 = points[0].timestamp;
  const t1 = points[points.length - 1].timestamp;
  // Calls are evenly spaced (sessions often idle for days between bursts); times are in the
  // tooltips and at both ends of the axis.
  const step = pw / points.length;
  const xOf = (i) => m.l + step * (i + 0.5);
  const cumulative = state.series === "cumulative";
  const values = points.map((p) => (cumulative ? num(p.cumulativeTokens) : TYPES.reduce((x, t) => x + num(p[t]), 0) || num(p.totalTokens)));
  const max = niceMax(Math.max(...values));
  const yOf = (v) => m.t + ph - (v / max) * ph;
  const last = points[points.length - 1];
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": `${cumulative ? "Cumulative" : "Per call"} tokens over ${points.length} points; ${fmtInt(num(last.cumulativeTokens))} tokens and ${fmtCost(num(last.cumulativeCost))} in total.`,
  });
  for (let i = 0; i <= 4; i++) {
    const y = m.t + ph - (ph * i) / 4;
    svg.append(s("line", { class: "gridline", x1: m.l, x2: width - m.r, y1: y, y2: y }));
    svg.append(s("text", { class: "axis", x: m.l - 6, y: y + 4, "text-anchor": "end", text: fmtCompact((max * i) / 4) }));
  }
  if (cumulative) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${xOf(i).toFixed(1)},${yOf(values[i]).toFixed(1)}`).join(" ");
    svg.append(s("path", { class: "line", d }));
    points.forEach((p, i) => {
      const c = s("circle", { cx: xOf(i), cy: yOf(values[i]), r: points.length > 80 ? 2 : 3 });
      c.append(s("title", { text: `${fmtTime(p.timestamp)}: ${fmtInt(num(p.cumulativeTokens))} tokens, ${fmtCost(num(p.cumulativeCost))} so far` }));
      svg.append(c);
    });
  } else {
    const bw = Math.max(1, Math.min(18, step * 0.7));
    points.forEach((p, i) => {
      const g = s("g", { class: "day" });
      g.append(s("title", { text: `${fmtTime(p.timestamp)}: ${TYPES.map((t) => `${TYPE_LABEL[t]} ${fmtInt(num(p[t]))}`).join(", ")}; ${fmtCost(num(p.cost))}` }));
      let y = m.t + ph;
      for (const t of TYPES) {
        const v = num(p[t]);
        if (!(v > 0)) continue;
        const hgt = Math.max(0.5, (v / max) * ph);
        y -= hgt;
        g.append(s("rect", { class: t, x: xOf(i) - bw / 2, y, width: bw, height: hgt }));
      }
      svg.append(g);
    });
  }
  svg.append(s("text", { class: "axis", x: m.l, y: height - 6, "text-anchor": "start", text: fmtTime(t0) }));
  if (t1 !== t0) svg.append(s("text", { class: "axis", x: width - m.r, y: height - 6, "text-anchor": "end", text: fmtTime(t1) }));
  box.replaceChildren(svg, h("p", { class: "muted", text: `${fmtInt(points.length)} points · ${fmtInt(num(last.cumulativeTokens))} tokens · ${fmtCost(num(last.cumulativeCost))}` }));
}
