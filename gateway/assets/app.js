// clawgate dashboard: usage and health of an OpenClaw deployment, live over the gateway's
// WebSocket (OpenClaw protocol v4). ES modules, no dependencies, no build step; served from the
// binary (gateway/src/dashboard.rs lists every file).
//
// Modules by concern: protocol (the wire), connection (its life), api (status and usage calls,
// push, snapshot), state and view (what is selected and shown), one module per panel (cards,
// chart, breakdowns, health, budgets, table, detail, banner), exports, and this file, which wires the
// controls and starts.
//
// Data flow: connect (token from localStorage or the token dialog) -> `status` every 2 s for the
// health panel -> one `sessions.usage` answer per view and page (figures for the whole view, one
// page of rows) -> `usage.updated` events reload it silently. Failures never put figures under
// the wrong label: the same view's last figures stay with a banner saying why they may be old.
import { loadUsage, restoreSnapshot } from "./api.js";
import { renderBusy, renderBanner, renderHeader } from "./banner.js";
import { renderDaily, renderTimeseries } from "./chart.js";
import { connect, pollWhenVisible, refresh, watchLiveness } from "./connection.js";
import { renderAgents, renderControls } from "./controls.js";
import { openDetail, showSeries } from "./detail.js";
import { $, $$, debounce } from "./dom.js";
import { clearExportStatus, exportDaily, exportJson, exportSessions } from "./exports.js";
import { renderAll } from "./render.js";
import { KEYS, PAGE_SIZES, prefs, savePrefs, state, store } from "./state.js";
import { renderSessions } from "./table.js";
import { showTokenDialog, takeToken } from "./token.js";
import { currentKey, validDate } from "./view.js";

/** The gateway refuses longer `search` texts. */
const MAX_SEARCH_BYTES = 200;

/** A new range, zone or agent: the figures and the first page of rows of it. */
function changeView() {
  savePrefs();
  renderControls();
  state.page = 0;
  if (state.summaryKey !== currentKey()) state.usageError = null;
  clearExportStatus();
  renderAll();
  loadUsage("view");
}

/** A new page, order, size or search: only the table waits. */
function changePage() {
  renderSessions();
  renderBusy();
  loadUsage("page");
}

function onSearch() {
  const text = $("#search").value.trim();
  const bytes = new TextEncoder().encode(text).length;
  state.searchError = bytes > MAX_SEARCH_BYTES ? `Search text is limited to ${MAX_SEARCH_BYTES} bytes (this one has ${bytes}).` : "";
  if (state.searchError || text === state.search) return renderSessions();
  state.search = text;
  state.page = 0;
  changePage();
}

function wire() {
  $$("[data-preset]").forEach((b) =>
    b.addEventListener("click", () => {
      prefs.preset = b.dataset.preset;
      changeView();
    }),
  );
  const onDates = debounce(() => {
    const start = $("#start").value;
    const end = $("#end").value;
    const ok = validDate(start) && validDate(end) && start <= end;
    $("#start").setAttribute("aria-invalid", String(!ok));
    $("#end").setAttribute("aria-invalid", String(!ok));
    if (!ok) return;
    Object.assign(prefs, { preset: "custom", start, end });
    changeView();
  }, 400);
  $("#start").addEventListener("change", onDates);
  $("#end").addEventListener("change", onDates);
  $("#tz").addEventListener("change", () => {
    prefs.tz = $("#tz").value === "utc" ? "utc" : "local";
    changeView();
  });
  $("#agent").addEventListener("change", () => {
    prefs.agent = $("#agent").value;
    changeView();
  });
  $("#refresh").addEventListener("click", refresh);
  $$("[data-measure]").forEach((b) =>
    b.addEventListener("click", () => {
      prefs.measure = b.dataset.measure === "cost" ? "cost" : "tokens";
      savePrefs();
      renderDaily();
    }),
  );
  $("#daily-table-box").addEventListener("toggle", () => renderDaily());
  // The gateway searches all sessions: wait for a pause in typing before asking.
  $("#search").addEventListener("input", debounce(onSearch, 300));
  $("#page-size").addEventListener("change", () => {
    prefs.pageSize = PAGE_SIZES.includes(+$("#page-size").value) ? +$("#page-size").value : 25;
    state.page = 0;
    savePrefs();
    changePage();
  });
  $("#prev").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    changePage();
  });
  $("#next").addEventListener("click", () => {
    state.page++;
    changePage();
  });
  $$("#sessions-table th[data-sort] button").forEach((b) =>
    b.addEventListener("click", () => {
      const k = b.parentElement.dataset.sort;
      if (prefs.sort === k) prefs.dir = -prefs.dir;
      else Object.assign(prefs, { sort: k, dir: -1 });
      state.page = 0;
      savePrefs();
      changePage();
    }),
  );
  $("#sessions-body").addEventListener("click", (ev) => {
    const btn = ev.target.closest("[data-open]");
    if (btn) openDetail(btn.dataset.open);
  });
  $("#detail-close").addEventListener("click", () => $("#detail").close());
  $("#detail").addEventListener("close", () => {
    state.detailKey = "";
    state.detailRow = null;
  });
  $$("[data-series]").forEach((b) => b.addEventListener("click", () => showSeries(b.dataset.series)));
  $("#export-sessions").addEventListener("click", exportSessions);
  $("#export-daily").addEventListener("click", exportDaily);
  $("#export-json").addEventListener("click", exportJson);
  $("#banner").addEventListener("click", (ev) => {
    const btn = ev.target.closest("[data-action]");
    if (btn && btn.dataset.action === "token") showTokenDialog();
  });
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (takeToken()) connect();
  });
  let lastWidth = 0;
  const onResize = debounce(() => {
    const w = $("#chart").clientWidth;
    if (w === lastWidth) return;
    lastWidth = w;
    renderDaily();
    const ts = state.detailKey && state.timeseries.get(state.detailKey);
    if (ts) renderTimeseries(ts);
  }, 120);
  window.addEventListener("resize", onResize);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollWhenVisible();
  });
}

function start() {
  // `#token=…` (as printed by setup scripts) is stored, then removed from the address bar.
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    store(KEYS.token, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  wire();
  renderControls();
  renderAgents();
  renderAll();
  restoreSnapshot();
  renderHeader();
  setInterval(renderBanner, 1000);
  watchLiveness();
  connect();
}
start();
