// The selected view (date range, zone, agent) as `sessions.usage` params, and whether the figures
// on screen belong to it.
import { pad } from "./format.js";
import { prefs, state } from "./state.js";

export const DAY_MS = 86400000;

function ymd(date, utc) {
  return utc
    ? `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`
    : `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}
const today = () => ymd(new Date(), prefs.tz === "utc");
export const dayMs = (d) => Date.UTC(+d.slice(0, 4), +d.slice(5, 7) - 1, +d.slice(8, 10));
export const addDays = (d, n) => new Date(dayMs(d) + n * DAY_MS).toISOString().slice(0, 10);
export const validDate = (d) => /^\d{4}-\d{2}-\d{2}$/.test(d || "") && !isNaN(dayMs(d));
const offsetMinutes = () => (prefs.tz === "utc" ? 0 : -new Date().getTimezoneOffset());
export function utcOffset() {
  const off = -new Date().getTimezoneOffset();
  const a = Math.abs(off);
  return "UTC" + (off < 0 ? "-" : "+") + Math.floor(a / 60) + (a % 60 ? ":" + pad(a % 60) : "");
}
function presetRange(preset) {
  const end = today();
  const back = { today: 0, "7d": 6, "30d": 29, "90d": 89 }[preset];
  if (preset === "all") return ["1970-01-01", end];
  return [addDays(end, -(back === undefined ? 29 : back)), end];
}
export function viewRange() {
  if (prefs.preset === "custom" && validDate(prefs.start) && validDate(prefs.end)) return [prefs.start, prefs.end];
  return presetRange(prefs.preset === "custom" ? "30d" : prefs.preset);
}
/** The params of the current view, as sent to `sessions.usage`. */
export function viewParams() {
  const [startDate, endDate] = viewRange();
  const p = { startDate, endDate };
  if (prefs.tz === "utc") p.mode = "utc";
  else Object.assign(p, { mode: "specific", utcOffset: utcOffset() });
  if (prefs.agent) p.agentId = prefs.agent;
  else p.agentScope = "all";
  return p;
}
export const viewKey = (p) => JSON.stringify(p);
export const currentKey = () => viewKey(viewParams());
/** The view's first and last millisecond. */
export function viewBounds(p) {
  const off = (p.mode === "utc" ? 0 : offsetMinutes()) * 60000;
  return [dayMs(p.startDate) - off, dayMs(p.endDate) + DAY_MS - 1 - off];
}
/** A view key in words: "2026-11-05 to 2026-12-04 · all agents · UTC+5:30". */
export function describeView(key) {
  let p;
  try {
    p = JSON.parse(key);
  } catch (_) {
    return "";
  }
  const range = p.startDate === "1970-01-01" ? `all time to ${p.endDate}` : p.startDate === p.endDate ? p.startDate : `${p.startDate} to ${p.endDate}`;
  return `${range} · ${p.agentId ? "agent " + p.agentId : "all agents"} · ${p.mode === "utc" ? "UTC" : p.utcOffset || "local time"}`;
}

/** The figures on screen answer the selected view. */
export const summaryIsCurrent = () => !!state.summary && state.summaryKey === currentKey();
/**
 * The answer the panels show: the selected view's; while another view loads, the previous one
 * (dimmed, and labelled with its own range); nothing once loading the selected view failed, so
 * that old figures never stand under a new range's label.
 */
export function shownSummary() {
  if (!state.summary) return null;
  if (state.summaryKey === currentKey()) return state.summary;
  return state.usageError ? null : state.summary;
}

/** The sessions table's page as `sessions.usage` paging params (clawgate's additive ones). */
export function pageParams() {
  const p = { limit: prefs.pageSize, offset: state.page * prefs.pageSize, sortBy: prefs.sort, sortDir: prefs.dir > 0 ? "asc" : "desc" };
  if (state.search) p.search = state.search;
  return p;
}
/** The whole query of the current view and page. */
export const pageQuery = () => Object.assign(viewParams(), pageParams());
export const currentPageKey = () => JSON.stringify(pageQuery());
