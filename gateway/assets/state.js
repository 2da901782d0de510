// What the page knows: preferences kept in localStorage, and the state of the connection, the
// figures and the sessions table. Plain objects, changed by the loading modules and read by the
// panels; nothing here touches the DOM.

export const KEYS = { token: "clawgate.token", prefs: "clawgate.prefs", agents: "clawgate.agents", snapshot: "clawgate.snapshot" };
export const PAGE_SIZES = [25, 50, 100];
/** The columns the gateway sorts by (`sessions.usage` `sortBy`); the others do not sort, since
 *  sorting one page of them would pass for an order of all sessions. */
export const SORT_KEYS = ["cost", "tokens", "messages", "updatedAt"];
export const bootAt = Date.now();

export function load(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch (_) {
    return fallback;
  }
}
export function store(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch (_) {
    /* storage full or disabled: preferences just do not persist */
  }
}
export function forget(key) {
  try {
    localStorage.removeItem(key);
  } catch (_) {
    /* ignore */
  }
}

export const prefs = Object.assign(
  { preset: "30d", start: "", end: "", tz: "local", agent: "", measure: "tokens", pageSize: 25, sort: "cost", dir: -1 },
  load(KEYS.prefs, {}),
);
prefs.pageSize = PAGE_SIZES.includes(+prefs.pageSize) ? +prefs.pageSize : 25;
if (prefs.sort === "last") prefs.sort = "updatedAt"; // saved by earlier versions
if (!SORT_KEYS.includes(prefs.sort)) Object.assign(prefs, { sort: "cost", dir: -1 });
prefs.dir = prefs.dir > 0 ? 1 : -1;
export const savePrefs = () => store(KEYS.prefs, prefs);

let memoryToken = "";
export const getToken = () => memoryToken || load(KEYS.token, "") || "";
/** Keeps the token in localStorage when remembered, else for this page only. */
export function setToken(token, remember) {
  if (remember) {
    store(KEYS.token, token);
    memoryToken = "";
  } else {
    forget(KEYS.token);
    memoryToken = token;
  }
}

export const state = {
  mode: "ws", // or "http" when the gateway refuses a browser without a device identity
  conn: "connecting",
  connText: "Connecting…",
  everConnected: false,
  attempt: 0,
  reconnectAt: 0,
  authNeeded: false,
  authWhy: "",
  status: null,
  statusAt: 0,
  statusError: null,
  summary: null, // the last sessions.usage answer shown: totals, aggregates, cacheStatus, one page of rows
  summaryKey: "", // the view (range, zone, agent) it answers
  summaryAt: 0,
  fromSnapshot: false,
  snapshotAt: 0,
  rows: null, // the page of table rows built from that answer
  rowsKey: "", // the page query (view, offset, size, order, search) they answer
  rowsView: "", // the view they belong to
  pageInfo: null, // the answer's `page`: offset, limit, total (rows matching the search), sortBy, sortDir
  loading: false,
  loadStartedAt: 0,
  lastLoadDoneAt: 0,
  loadGen: 0,
  loadReason: "",
  usageError: null,
  retryAt: 0,
  retryDelay: 0,
  staleDelay: 0,
  agents: new Set(load(KEYS.agents, [])),
  search: "", // as sent to the gateway (trimmed)
  searchError: "",
  page: 0, // the page asked for, 0-based
  timeseries: new Map(),
  lastAnswer: null, // {key, limit, bytes, at} of the last usage answer shown
  detailKey: "",
  detailRow: null,
  series: "cumulative",
  marked: { data: false },
  exporting: false,
};
