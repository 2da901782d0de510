// The calls that feed the page: `status` every 2 s for the health panel, and `sessions.usage`
// for the figures. One `sessions.usage` answer per view and page: totals, aggregates and daily
// series cover the whole view whatever the page, and its rows are the table's one page, sorted,
// searched and cut by the gateway (`limit`, `offset`, `sortBy`, `sortDir`, `search`), so a
// refresh moves kilobytes, not every session. `usage.updated` events reload the page silently;
// failures keep the last figures of the same view with a banner, and every wait has a deadline.
import { $ } from "./dom.js";
import { renderBanner, renderBusy } from "./banner.js";
import { renderCards } from "./cards.js";
import { renderAgents } from "./controls.js";
import { loadTimeseries, refreshDetail } from "./detail.js";
import { renderBudgets } from "./budgets.js";
import { renderHealth, workerUp } from "./health.js";
import { call, link } from "./protocol.js";
import { renderAll } from "./render.js";
import { KEYS, load, prefs, state, store } from "./state.js";
import { toRow } from "./table.js";
import { needToken } from "./token.js";
import { currentKey, currentPageKey, pageParams, viewBounds, viewKey, viewParams } from "./view.js";

// ---------------------------------------------------------------- health polling
let statusTimer = 0;
let statusGen = 0;
export async function pollStatus() {
  clearTimeout(statusTimer);
  const gen = ++statusGen;
  if (state.mode === "ws" && !link.open) return;
  try {
    const status = await call("status", {}, 5000);
    if (gen !== statusGen) return;
    onStatus(status);
  } catch (e) {
    if (gen !== statusGen) return;
    state.statusError = e;
    if (e.auth) needToken("This gateway requires a token.");
    else if (e.code === "TIMEOUT" && state.mode === "ws") link.drop("status timed out");
  }
  renderHealth();
  renderBudgets();
  renderBanner();
  if (gen === statusGen && !state.authNeeded) statusTimer = setTimeout(pollStatus, document.hidden ? 15000 : 2000);
}
export const stopStatus = () => clearTimeout(statusTimer);

function onStatus(status) {
  const before = state.status;
  state.status = status;
  state.statusAt = Date.now();
  state.statusError = null;
  // Back from a restart (seen down, or a new pid): replace stale figures or a failed load.
  const pidBefore = before && before.worker && before.worker.pid;
  const restarted = before && workerUp(status) && (!workerUp(before) || pidBefore !== status.worker.pid);
  if (restarted && (state.usageError || dataNotFresh())) loadUsage("worker-ready");
}
function dataNotFresh() {
  const cs = state.summary && state.summary.cacheStatus;
  return !!cs && cs.status !== "fresh";
}

// ---------------------------------------------------------------- usage loading
let retryTimer = 0;
let staleTimer = 0;
let pushTimer = 0;

/** Loads the current view and page; a newer call supersedes one in flight. */
export async function loadUsage(reason) {
  if (state.mode === "ws" && !link.open) return;
  clearTimeout(retryTimer);
  clearTimeout(staleTimer);
  clearTimeout(pushTimer);
  const view = viewParams();
  const key = viewKey(view);
  const query = Object.assign({}, view, pageParams());
  const gen = ++state.loadGen;
  state.loading = true;
  state.loadStartedAt = Date.now();
  state.loadReason = reason;
  renderBusy();
  renderCards();
  let failed = null;
  try {
    const payload = await call("sessions.usage", query, 30000);
    if (gen !== state.loadGen) return;
    accept(payload, key, query);
  } catch (e) {
    if (gen !== state.loadGen) return;
    failed = e;
  }
  state.loading = false;
  state.lastLoadDoneAt = Date.now();
  if (failed) onUsageError(failed);
  else {
    state.usageError = null;
    state.retryDelay = 0;
    scheduleStaleRetry();
  }
  renderAll();
  if (!failed) {
    markFirst();
    saveSnapshot();
    if (state.detailKey) refreshDetail();
    // Fewer rows than the page asked for (a search narrowed them, sessions left the range):
    // show the last page that has rows instead of an empty one.
    const info = state.pageInfo;
    const last = info.total > 0 ? Math.floor((info.total - 1) / prefs.pageSize) : 0;
    if (!state.rows.length && state.page > last) {
      state.page = last;
      loadUsage("page");
    }
  }
}

function onUsageError(e) {
  state.usageError = e;
  if (e.auth) return needToken("This gateway requires a token.");
  if (e.local) return; // reconnecting; the reconnect reloads
  if (e.retryable || e.code === "UNAVAILABLE" || e.code === "TIMEOUT") {
    state.retryDelay = Math.min(15000, Math.max(e.retryAfterMs || 1000, state.retryDelay ? state.retryDelay * 2 : 1000));
    state.retryAt = Date.now() + state.retryDelay;
    retryTimer = setTimeout(() => loadUsage("retry"), state.retryDelay);
  }
}

/** Figures marked stale or refreshing are asked again with a growing delay until fresh. */
function scheduleStaleRetry() {
  if (!dataNotFresh()) {
    state.staleDelay = 0;
    return;
  }
  state.staleDelay = Math.min(30000, state.staleDelay ? state.staleDelay * 2 : 3000);
  staleTimer = setTimeout(() => loadUsage("stale"), state.staleDelay);
}

function accept(payload, key, query) {
  if (!payload || typeof payload !== "object") throw { code: "UNAVAILABLE", message: "the gateway sent an empty answer", retryable: true };
  const pageKey = JSON.stringify(query);
  state.lastAnswer = { key: pageKey, limit: query.limit, bytes: payload.__bytes, at: Date.now() };
  state.summary = payload;
  state.summaryKey = key;
  state.summaryAt = Date.now();
  state.fromSnapshot = false;
  const sessions = Array.isArray(payload.sessions) ? payload.sessions : [];
  state.rows = sessions.map(toRow);
  state.rowsKey = pageKey;
  state.rowsView = key;
  // Every paging query gets `page` back; without one (an older gateway) the page is what came.
  state.pageInfo = payload.page || { offset: query.offset, limit: query.limit, total: query.offset + sessions.length, sortBy: query.sortBy, sortDir: query.sortDir };
  if (!prefs.agent) {
    const agents = ((payload.aggregates && payload.aggregates.byAgent) || []).map((a) => a.agentId).filter(Boolean);
    const before = state.agents.size;
    agents.forEach((a) => state.agents.add(a));
    if (state.agents.size !== before) {
      store(KEYS.agents, Array.from(state.agents).slice(0, 500));
      renderAgents();
    }
  }
  document.body.dataset.query = key;
}

/** Performance marks and `data-` flags the browser tests and people timing the page read. */
function markFirst() {
  if (state.marked.data) return;
  state.marked.data = true;
  performance.mark("clawgate:first-data");
  performance.mark("clawgate:sessions");
  document.body.dataset.ready = "1";
  document.body.dataset.sessionsReady = "1";
}

// ---------------------------------------------------------------- push
export function onEvent(name, payload) {
  if (name === "usage.updated") onUsageUpdated(payload || {});
  // A budget threshold was crossed: show the new figures now rather than at the next poll.
  else if (name === "usage.budget") pollStatus();
}
function onUsageUpdated(ev) {
  state.timeseries.clear();
  if (state.detailKey && $("#detail").open) loadTimeseries(state.detailKey);
  const q = ev.query || {};
  if (q.key || (ev.method && ev.method !== "sessions.usage" && ev.method !== "usage.cost")) return;
  const mine = prefs.agent ? typeof q.agentId === "string" && q.agentId.toLowerCase() === prefs.agent.toLowerCase() : q.agentScope === "all";
  if (!mine) return;
  const [start, end] = viewBounds(viewParams());
  if (typeof q.startMs === "number" && typeof q.endMs === "number" && (q.startMs > end || q.endMs < start)) return;
  // An answer in flight is at least as new as this event, and the event announcing an answer
  // just shown (it may arrive right after it) brings nothing new.
  if (state.loading) return;
  const shown = state.lastAnswer;
  if (shown && shown.key === currentPageKey() && shown.limit === q.limit && shown.bytes === ev.bytes && Date.now() - shown.at < 3000) return;
  clearTimeout(pushTimer);
  pushTimer = setTimeout(() => loadUsage("push"), 250);
}

// ---------------------------------------------------------------- snapshot
// The figures (not the rows) of the last view, shown at once on the next visit until the
// gateway answers, marked as saved.
let snapshotSavedAt = 0;
function saveSnapshot() {
  if (Date.now() - snapshotSavedAt < 10000) return;
  snapshotSavedAt = Date.now();
  const p = state.summary;
  const a = p.aggregates || {};
  const pick = { sessionCount: a.sessionCount, messages: a.messages, byModel: a.byModel, byProvider: a.byProvider, byAgent: a.byAgent, byChannel: a.byChannel, costDaily: a.costDaily, daily: a.daily };
  store(KEYS.snapshot, { v: 1, key: state.summaryKey, at: state.summaryAt, summary: { totals: p.totals, cacheStatus: p.cacheStatus, aggregates: pick } });
}
export function restoreSnapshot() {
  const snap = load(KEYS.snapshot, null);
  if (!snap || snap.v !== 1 || snap.key !== currentKey() || !snap.summary) return;
  state.summary = snap.summary;
  state.summaryKey = snap.key;
  state.summaryAt = snap.at;
  state.fromSnapshot = true;
  state.snapshotAt = snap.at;
  renderAll();
}
