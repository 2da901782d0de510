// How numbers, money, sizes and times are written, on screen and in exports.
import { prefs } from "./state.js";

const intFmt = new Intl.NumberFormat("en-US");
export const compactFmt = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const finite = (n) => typeof n === "number" && isFinite(n);

export const fmtInt = (n) => (finite(n) ? intFmt.format(Math.round(n)) : "—");
export const fmtCompact = (n) => (finite(n) ? (Math.abs(n) < 10000 ? intFmt.format(Math.round(n)) : compactFmt.format(n)) : "—");
export function fmtCost(n) {
  if (!finite(n)) return "—";
  const a = Math.abs(n);
  const digits = a > 0 && a < 0.01 ? 4 : 2;
  return (n < 0 ? "-$" : "$") + a.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
export const fmtPct = (x) => (finite(x) ? (x * 100).toFixed(1) + "%" : "—");
export const fmtLag = (v) => (finite(v) ? v.toFixed(v < 10 ? 1 : 0) + " ms" : "—");
export function fmtBytes(b) {
  if (!finite(b)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return (i ? b.toFixed(b < 10 ? 1 : 0) : String(b)) + " " + units[i];
}
export function fmtDuration(ms) {
  if (!finite(ms)) return "—";
  const sec = Math.floor(ms / 1000);
  if (sec < 60) return sec + " s";
  const min = Math.floor(sec / 60);
  if (min < 60) return min + " min " + (sec % 60) + " s";
  const hr = Math.floor(min / 60);
  if (hr < 48) return hr + " h " + (min % 60) + " min";
  return Math.floor(hr / 24) + " d " + (hr % 24) + " h";
}

/**
 * A number for a CSV cell: integers as they are, fractions rounded to 10 decimals with trailing
 * zeros trimmed. Costs are float sums, and `String(7.2075510000000005)` would carry the noise
 * into spreadsheets; 10 decimals keep every digit a price per token can produce.
 */
export function csvNumber(v) {
  if (!finite(v)) return "";
  if (Number.isInteger(v)) return String(v);
  const text = v.toFixed(10).replace(/0+$/, "").replace(/\.$/, "");
  return text === "-0" ? "0" : text;
}

export const pad = (n) => String(n).padStart(2, "0");
function parts(ms) {
  const d = new Date(ms);
  return prefs.tz === "utc"
    ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
}
export function fmtTime(ms) {
  if (!ms) return "—";
  const [y, mo, d, hh, mm] = parts(ms);
  return `${y}-${pad(mo)}-${pad(d)} ${pad(hh)}:${pad(mm)}${prefs.tz === "utc" ? " UTC" : ""}`;
}
export function fmtClock(ms) {
  if (!ms) return "—";
  const p = parts(ms);
  return `${pad(p[3])}:${pad(p[4])}:${pad(p[5])}`;
}
export function fmtAgo(ms) {
  if (!ms) return "";
  const d = Date.now() - ms;
  return d < 5000 ? "just now" : fmtDuration(d) + " ago";
}
