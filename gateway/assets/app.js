// clawgate dashboard: usage and health of an OpenClaw deployment, live over the gateway's
// WebSocket (OpenClaw protocol v4). No dependencies, no build step; served from the binary.
//
// Data flow: connect (token from localStorage or the token dialog) -> `status` every 2 s for the
// health panel -> `sessions.usage` twice per view (limit 1 for a fast first render of totals,
// charts and breakdowns; then every row for the sessions table) -> `usage.updated` events
// trigger a silent reload of the view. Failures never clear what is shown: the last data stays
// with a banner saying why it may be old, and every wait has a deadline.
"use strict";
(function () {
  const DAY_MS = 86400000;
  const ROW_LIMIT = 100000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TYPES = ["input", "output", "cacheRead", "cacheWrite"];
  const TYPE_LABEL = { input: "Input", output: "Output", cacheRead: "Cache read", cacheWrite: "Cache write" };
  const KEYS = { token: "clawgate.token", prefs: "clawgate.prefs", agents: "clawgate.agents", snapshot: "clawgate.snapshot" };
  const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM" };
  const bootAt = Date.now();

  // ---------------------------------------------------------------- small helpers
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  /** Creates an element: attrs may hold `text`, `class`, `data` (dataset) and attributes. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k === "data") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
    return node;
  }
  function s(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    return node;
  }
  function load(key, fallback) {
    try {
      const v = localStorage.getItem(key);
      return v === null ? fallback : JSON.parse(v);
    } catch (_) {
      return fallback;
    }
  }
  function store(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch (_) {
      /* storage full or disabled: preferences just do not persist */
    }
  }
  function forget(key) {
    try {
      localStorage.removeItem(key);
    } catch (_) {
      /* ignore */
    }
  }
  function debounce(fn, ms) {
    let t = 0;
    return (...args) => {
      clearTimeout(t);
      t = setTimeout(() => fn(...args), ms);
    };
  }
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : 0);

  // ---------------------------------------------------------------- formatting
  const intFmt = new Intl.NumberFormat("en-US");
  const compactFmt = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  const fmtInt = (n) => (typeof n === "number" && isFinite(n) ? intFmt.format(Math.round(n)) : "—");
  const fmtCompact = (n) =>
    typeof n === "number" && isFinite(n) ? (Math.abs(n) < 10000 ? intFmt.format(Math.round(n)) : compactFmt.format(n)) : "—";
  function fmtCost(n) {
    if (typeof n !== "number" || !isFinite(n)) return "—";
    const a = Math.abs(n);
    const digits = a > 0 && a < 0.01 ? 4 : 2;
    return (n < 0 ? "-$" : "$") + a.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const fmtPct = (x) => (typeof x === "number" && isFinite(x) ? (x * 100).toFixed(1) + "%" : "—");
  function fmtBytes(b) {
    if (typeof b !== "number" || !isFinite(b)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) {
      b /= 1024;
      i++;
    }
    return (i ? b.toFixed(b < 10 ? 1 : 0) : String(b)) + " " + units[i];
  }
  function fmtDuration(ms) {
    if (typeof ms !== "number" || !isFinite(ms)) return "—";
    const sec = Math.floor(ms / 1000);
    if (sec < 60) return sec + " s";
    const min = Math.floor(sec / 60);
    if (min < 60) return min + " min " + (sec % 60) + " s";
    const hr = Math.floor(min / 60);
    if (hr < 48) return hr + " h " + (min % 60) + " min";
    return Math.floor(hr / 24) + " d " + (hr % 24) + " h";
  }
  const pad = (n) => String(n).padStart(2, "0");
  function parts(ms) {
    const d = new Date(ms);
    const utc = prefs.tz === "utc";
    return utc
      ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
      : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  }
  function fmtTime(ms) {
    if (!ms) return "—";
    const [y, mo, d, hh, mm] = parts(ms);
    return `${y}-${pad(mo)}-${pad(d)} ${pad(hh)}:${pad(mm)}${prefs.tz === "utc" ? " UTC" : ""}`;
  }
  function fmtClock(ms) {
    if (!ms) return "—";
    const p = parts(ms);
    return `${pad(p[3])}:${pad(p[4])}:${pad(p[5])}`;
  }
  function fmtAgo(ms) {
    if (!ms) return "";
    const d = Date.now() - ms;
    return d < 5000 ? "just now" : fmtDuration(d) + " ago";
  }

  // ---------------------------------------------------------------- dates and params
  function ymd(date, utc) {
    return utc
      ? `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`
      : `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  }
  const today = () => ymd(new Date(), prefs.tz === "utc");
  const dayMs = (d) => Date.UTC(+d.slice(0, 4), +d.slice(5, 7) - 1, +d.slice(8, 10));
  const addDays = (d, n) => new Date(dayMs(d) + n * DAY_MS).toISOString().slice(0, 10);
  const validDate = (d) => /^\d{4}-\d{2}-\d{2}$/.test(d || "") && !isNaN(dayMs(d));
  const offsetMinutes = () => (prefs.tz === "utc" ? 0 : -new Date().getTimezoneOffset());
  function utcOffset() {
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
  function viewRange() {
    if (prefs.preset === "custom" && validDate(prefs.start) && validDate(prefs.end)) return [prefs.start, prefs.end];
    return presetRange(prefs.preset === "custom" ? "30d" : prefs.preset);
  }
  /** The params of the current view, as sent to `sessions.usage`. */
  function viewParams() {
    const [startDate, endDate] = viewRange();
    const p = { startDate, endDate };
    if (prefs.tz === "utc") p.mode = "utc";
    else Object.assign(p, { mode: "specific", utcOffset: utcOffset() });
    if (prefs.agent) p.agentId = prefs.agent;
    else p.agentScope = "all";
    return p;
  }
  const viewKey = (p) => JSON.stringify(p);
  function viewBounds(p) {
    const off = (p.mode === "utc" ? 0 : offsetMinutes()) * 60000;
    return [dayMs(p.startDate) - off, dayMs(p.endDate) + DAY_MS - 1 - off];
  }

  // ---------------------------------------------------------------- state
  const prefs = Object.assign(
    { preset: "30d", start: "", end: "", tz: "local", agent: "", measure: "tokens", pageSize: 25, sort: "cost", dir: -1 },
    load(KEYS.prefs, {}),
  );
  prefs.pageSize = [25, 50, 100].includes(+prefs.pageSize) ? +prefs.pageSize : 25;
  prefs.dir = prefs.dir > 0 ? 1 : -1;
  const savePrefs = () => store(KEYS.prefs, prefs);
  let memoryToken = "";
  const getToken = () => memoryToken || load(KEYS.token, "") || "";

  const state = {
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
    summary: null, // the last sessions.usage payload shown (totals, aggregates, cacheStatus)
    summaryKey: "",
    summaryAt: 0,
    fromSnapshot: false,
    snapshotAt: 0,
    rows: null, // table rows built from the last full sessions.usage answer
    rowsKey: "",
    rowsCapped: false,
    loading: false,
    loadStartedAt: 0,
    lastLoadDoneAt: 0,
    loadGen: 0,
    usageError: null,
    retryAt: 0,
    retryDelay: 0,
    staleDelay: 0,
    agents: new Set(load(KEYS.agents, [])),
    search: "",
    page: 0,
    timeseries: new Map(),
    answers: new Map(), // limit -> {key, bytes, at} of the last usage answers shown
    detailKey: "",
    series: "cumulative",
    marked: { data: false, rows: false },
  };

  // ---------------------------------------------------------------- transport: WebSocket
  function normError(e) {
    if (!e || typeof e !== "object") return { code: "UNAVAILABLE", message: String(e || "unknown error"), retryable: true };
    return {
      code: e.code || "UNAVAILABLE",
      message: e.message || e.code || "error",
      retryable: !!e.retryable,
      retryAfterMs: typeof e.retryAfterMs === "number" ? e.retryAfterMs : undefined,
      details: e.details,
    };
  }
  const utf8Length = (text) => (/^[\x00-\x7f]*$/.test(text) ? text.length : new Blob([text]).size);
  const notConnected = () => ({ code: "UNAVAILABLE", message: "not connected to the gateway", retryable: true, local: true });

  const link = {
    ws: null,
    open: false,
    pending: new Map(),
    nextId: 1,
    lastFrameAt: 0,
    tickMs: 30000,
    connect(token) {
      this.drop(null);
      let ws;
      try {
        ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
      } catch (_) {
        onLinkClosed();
        return;
      }
      this.ws = ws;
      this.lastFrameAt = Date.now();
      const handshake = setTimeout(() => ws === this.ws && !this.open && this.drop("handshake timed out"), 15000);
      ws.onmessage = (ev) => {
        if (ws !== this.ws) return;
        this.lastFrameAt = Date.now();
        let f;
        try {
          f = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        if (f.type === "res") {
          const p = this.pending.get(f.id);
          if (!p) return;
          this.pending.delete(f.id);
          clearTimeout(p.timer);
          if (f.ok && f.payload && typeof f.payload === "object") {
            // The payload's size in bytes, as `usage.updated` reports it, to recognise the event
            // announcing this very answer (the gateway writes `res` frames in this exact form).
            const prefix = `{"type":"res","id":${JSON.stringify(f.id)},"ok":true,"payload":`;
            Object.defineProperty(f.payload, "__bytes", { value: utf8Length(ev.data) - prefix.length - 1 });
          }
          if (f.ok) p.resolve(f.payload);
          else p.reject(normError(f.error));
        } else if (f.type === "event") {
          if (f.event === "connect.challenge") this.hello(token, handshake);
          else onEvent(f.event, f.payload);
        }
      };
      ws.onclose = () => {
        clearTimeout(handshake);
        if (ws !== this.ws) return;
        this.ws = null;
        this.open = false;
        this.failAll();
        onLinkClosed();
      };
    },
    hello(token, handshake) {
      const params = {
        minProtocol: 4,
        maxProtocol: 4,
        client: {
          id: "openclaw-control-ui",
          displayName: "clawgate dashboard",
          version: "1",
          platform: navigator.platform || "web",
          mode: "ui",
        },
        role: "operator",
        scopes: ["operator.read"],
        locale: navigator.language || "en",
        userAgent: navigator.userAgent,
      };
      if (token) params.auth = { token };
      this.request("connect", params, 15000, true).then(
        (hello) => {
          clearTimeout(handshake);
          this.open = true;
          this.tickMs = (hello && hello.policy && hello.policy.tickIntervalMs) || 30000;
          onLinkOpen(hello);
        },
        (err) => {
          clearTimeout(handshake);
          onConnectRefused(err, token);
        },
      );
    },
    request(method, params, timeoutMs, handshake) {
      return new Promise((resolve, reject) => {
        const ws = this.ws;
        if (!ws || ws.readyState !== 1 || (!this.open && !handshake)) {
          reject(notConnected());
          return;
        }
        const id = "d" + this.nextId++;
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject({ code: "TIMEOUT", message: `${method} got no answer within ${Math.round(timeoutMs / 1000)} s`, retryable: true });
        }, timeoutMs);
        this.pending.set(id, { resolve, reject, timer });
        try {
          ws.send(JSON.stringify({ type: "req", id, method, params }));
        } catch (_) {
          this.pending.delete(id);
          clearTimeout(timer);
          reject(notConnected());
        }
      });
    },
    failAll() {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject({ code: "UNAVAILABLE", message: "the connection to the gateway closed", retryable: true, local: true });
      }
      this.pending.clear();
    },
    /** Closes the socket; with a reason, as a failure that reconnects. */
    drop(reason) {
      const ws = this.ws;
      if (!ws) return;
      this.ws = null;
      this.open = false;
      try {
        ws.close(reason ? 4000 : 1000, reason ? reason.slice(0, 100) : "");
      } catch (_) {
        /* already closed */
      }
      this.failAll();
      if (reason) onLinkClosed();
    },
  };

  // ---------------------------------------------------------------- transport: HTTP fallback
  async function httpCall(method, params, timeoutMs) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    const headers = { "content-type": "application/json" };
    const token = getToken();
    if (token) headers.authorization = "Bearer " + token;
    try {
      const res = await fetch("/api/v1/call/" + encodeURIComponent(method), {
        method: "POST",
        headers,
        body: JSON.stringify(params || {}),
        signal: ctl.signal,
        cache: "no-store",
      });
      const body = await res.json().catch(() => null);
      if (res.status === 401) throw { code: "UNAUTHORIZED", message: "the gateway needs a token", auth: true };
      if (body && body.ok) return body.payload;
      throw normError(body && body.error ? body.error : { code: "UNAVAILABLE", message: "HTTP " + res.status, retryable: res.status >= 500 });
    } catch (e) {
      if (e && e.name === "AbortError") throw { code: "TIMEOUT", message: `${method} got no answer within ${Math.round(timeoutMs / 1000)} s`, retryable: true };
      if (e && e.code) throw e;
      throw { code: "UNAVAILABLE", message: "the gateway is unreachable", retryable: true };
    } finally {
      clearTimeout(timer);
    }
  }

  function call(method, params, timeoutMs) {
    return state.mode === "http" ? httpCall(method, params, timeoutMs) : link.request(method, params, timeoutMs, false);
  }

  // ---------------------------------------------------------------- connection lifecycle
  let reconnectTimer = 0;
  function setConn(conn, text) {
    state.conn = conn;
    state.connText = text;
    renderHeader();
    renderBanner();
  }
  function connect() {
    clearTimeout(reconnectTimer);
    if (state.mode === "http") return startHttpMode();
    setConn("connecting", state.attempt ? `Reconnecting (attempt ${state.attempt + 1})…` : "Connecting…");
    link.connect(getToken());
  }
  function onLinkOpen(hello) {
    if (!state.everConnected) performance.mark("clawgate:connected");
    state.attempt = 0;
    state.everConnected = true;
    state.authNeeded = false;
    const version = hello && hello.server && hello.server.version;
    setConn("open", "Live" + (version ? ` · clawgate ${version}` : ""));
    pollStatus();
    loadUsage("connect");
  }
  function onConnectRefused(err, sentToken) {
    const code = (err.details && err.details.code) || "";
    // Without any credential the gateway answers as OpenClaw does (NOT_PAIRED, device identity
    // required): ask for the token first; only a refusal of a token-bearing connect means that
    // this browser cannot prove a device identity.
    if (code.startsWith("AUTH_") || /token|unauthori[sz]ed/i.test(err.message) || (!sentToken && code === "DEVICE_IDENTITY_REQUIRED")) {
      needToken(code === "AUTH_TOKEN_MISMATCH" ? "The gateway refused this token. Enter the current one." : "This gateway requires a token.");
    } else if (code === "DEVICE_IDENTITY_REQUIRED" || err.code === "NOT_PAIRED") {
      // Browsers outside loopback cannot prove a device identity over plain HTTP: use the
      // token-authenticated HTTP mirror instead (no push; figures refresh every minute).
      state.mode = "http";
      link.drop(null);
      startHttpMode();
    } else {
      state.connText = "Refused: " + err.message;
    }
  }
  function onLinkClosed() {
    clearTimeout(statusTimer);
    if (state.authNeeded || state.mode === "http") return;
    state.attempt++;
    const delay = Math.min(5000, 250 * 2 ** Math.min(state.attempt - 1, 5)) * (0.8 + Math.random() * 0.4);
    state.reconnectAt = Date.now() + delay;
    setConn(state.everConnected ? "closed" : "connecting", state.everConnected ? "Disconnected · reconnecting…" : "Connecting…");
    reconnectTimer = setTimeout(connect, delay);
  }
  function needToken(why) {
    state.authNeeded = true;
    state.authWhy = why;
    link.drop(null);
    setConn("auth", "Token required");
    showTokenDialog();
  }

  let httpTimer = 0;
  function startHttpMode() {
    clearInterval(httpTimer);
    setConn("polling", "Connected over HTTP (no live push)");
    pollStatus();
    loadUsage("connect");
    httpTimer = setInterval(() => !state.loading && !state.authNeeded && loadUsage("poll"), 60000);
  }

  // Liveness: status answers every 2 s keep frames flowing; silence means a dead connection.
  setInterval(() => {
    if (state.mode !== "ws" || !link.open) return;
    const limit = document.hidden ? 2 * link.tickMs + 5000 : 12000;
    if (Date.now() - link.lastFrameAt > limit) link.drop("no frames from the gateway");
  }, 2000);

  // ---------------------------------------------------------------- health polling
  let statusTimer = 0;
  let statusGen = 0;
  async function pollStatus() {
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
  const workerUp = (st) => !!st && !!st.worker && (st.worker.state === "ready" || st.worker.state === "busy");
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
  async function loadUsage(reason) {
    if (state.mode === "ws" && !link.open) return;
    clearTimeout(retryTimer);
    clearTimeout(staleTimer);
    clearTimeout(pushTimer);
    const params = viewParams();
    const key = viewKey(params);
    const gen = ++state.loadGen;
    state.loading = true;
    state.loadStartedAt = Date.now();
    state.loadReason = reason;
    renderBusy();
    // First the figures without the rows (small and quick: the first render), then every row.
    // One after the other: the worker computes one job at a time, so asking for both at once
    // would let the big one delay the small one. Pushes and retries ask for the rows only.
    let failed = null;
    if (reason !== "push" && reason !== "stale") {
      try {
        const summary = await call("sessions.usage", Object.assign({}, params, { limit: 1 }), 30000);
        if (gen !== state.loadGen) return;
        acceptSummary(summary, key);
      } catch (e) {
        if (gen !== state.loadGen) return;
        failed = e;
      }
    }
    if (!failed) {
      try {
        const full = await call("sessions.usage", Object.assign({}, params, { limit: ROW_LIMIT }), 60000);
        if (gen !== state.loadGen) return;
        acceptRows(full, key);
        failed = null; // the full answer carries the figures too
      } catch (e) {
        if (gen !== state.loadGen) return;
        failed = failed || e;
      }
    }
    state.loading = false;
    state.lastLoadDoneAt = Date.now();
    if (failed) onUsageError(failed);
    else {
      state.usageError = null;
      state.retryDelay = 0;
      scheduleStaleRetry();
    }
    renderBusy();
    renderHeader();
    renderBanner();
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
  function onEvent(name, payload) {
    if (name === "usage.updated") onUsageUpdated(payload || {});
    // A budget threshold was crossed: show the new figures now rather than at the next poll.
    else if (name === "usage.budget") pollStatus();
  }
  function onUsageUpdated(ev) {
    state.timeseries.clear();
    if (state.detailKey && $("#detail").open) loadTimeseries(state.detailKey);
    const q = ev.query || {};
    if (q.key || (ev.method && ev.method !== "sessions.usage" && ev.method !== "usage.cost")) return;
    const mine = prefs.agent
      ? typeof q.agentId === "string" && q.agentId.toLowerCase() === prefs.agent.toLowerCase()
      : q.agentScope === "all";
    if (!mine) return;
    const [start, end] = viewBounds(viewParams());
    if (typeof q.startMs === "number" && typeof q.endMs === "number" && (q.startMs > end || q.endMs < start)) return;
    // An answer in flight is at least as new as this event, and the event announcing an answer
    // just shown (it may arrive right after it) brings nothing new.
    if (state.loading) return;
    const shown = state.answers.get(q.limit);
    if (shown && shown.key === viewKey(viewParams()) && shown.bytes === ev.bytes && Date.now() - shown.at < 3000) return;
    clearTimeout(pushTimer);
    pushTimer = setTimeout(() => loadUsage("push"), 250);
  }

  function acceptSummary(payload, key, limit) {
    if (!payload || typeof payload !== "object") return;
    state.answers.set(limit || 1, { key, bytes: payload.__bytes, at: Date.now() });
    state.summary = payload;
    state.summaryKey = key;
    state.summaryAt = Date.now();
    state.fromSnapshot = false;
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
    renderSummary();
    if (!state.marked.data) {
      state.marked.data = true;
      performance.mark("clawgate:first-data");
      document.body.dataset.ready = "1";
    }
    saveSnapshot();
  }
  function acceptRows(payload, key) {
    acceptSummary(payload, key, ROW_LIMIT);
    const sessions = Array.isArray(payload.sessions) ? payload.sessions : [];
    state.rows = sessions.map(toRow);
    state.rowsKey = key;
    state.rowsCapped = sessions.length >= ROW_LIMIT;
    sortCache = null;
    renderSessions();
    if (!state.marked.rows) {
      state.marked.rows = true;
      performance.mark("clawgate:sessions");
      document.body.dataset.sessionsReady = "1";
    }
    if (state.detailKey) refreshDetail();
  }

  let snapshotSavedAt = 0;
  function saveSnapshot() {
    if (Date.now() - snapshotSavedAt < 10000) return;
    snapshotSavedAt = Date.now();
    const p = state.summary;
    const a = p.aggregates || {};
    const pick = { sessionCount: a.sessionCount, messages: a.messages, byModel: a.byModel, byProvider: a.byProvider, byAgent: a.byAgent, byChannel: a.byChannel, costDaily: a.costDaily, daily: a.daily };
    store(KEYS.snapshot, { v: 1, key: state.summaryKey, at: state.summaryAt, summary: { totals: p.totals, cacheStatus: p.cacheStatus, aggregates: pick } });
  }
  function restoreSnapshot() {
    const snap = load(KEYS.snapshot, null);
    if (!snap || snap.v !== 1 || snap.key !== viewKey(viewParams()) || !snap.summary) return;
    state.summary = snap.summary;
    state.summaryKey = snap.key;
    state.summaryAt = snap.at;
    state.fromSnapshot = true;
    state.snapshotAt = snap.at;
    renderSummary();
  }

  // ---------------------------------------------------------------- rendering: header, banner
  function renderHeader() {
    const conn = $("#conn");
    conn.dataset.state = state.conn;
    $("#conn-text").textContent = state.connText;
    const updated = $("#updated");
    updated.textContent = state.summaryAt ? `Figures from ${fmtClock(state.summaryAt)}${state.fromSnapshot ? " (saved)" : ""}` : "";
  }
  function renderBusy() {
    const current = viewKey(viewParams());
    $("#progress").hidden = !state.loading;
    $("#totals").setAttribute("aria-busy", String(state.summaryKey !== current));
    $("#daily").setAttribute("aria-busy", String(state.summaryKey !== current));
    $("#sessions").setAttribute("aria-busy", String(state.rowsKey !== current));
    for (const id of ["#export-sessions", "#export-json"]) $(id).disabled = !state.summary;
    $("#export-daily").disabled = !state.summary;
  }
  function bannerLines() {
    const lines = [];
    const since = state.summaryAt ? ` Showing the figures from ${fmtClock(state.summaryAt)}.` : "";
    if (state.authNeeded) {
      lines.push({ kind: "auth", level: "bad", text: state.authWhy || "This gateway requires a token.", action: ["Enter token", showTokenDialog] });
    } else if (state.mode === "ws" && state.conn !== "open" && (state.everConnected || Date.now() - bootAt > 4000)) {
      // No countdowns: the banner is a live region, and it should speak when things change.
      lines.push({
        kind: "conn",
        level: "warn",
        text: (state.everConnected ? "Connection to the gateway lost; reconnecting automatically." : "Cannot reach the gateway yet; retrying automatically.") + since,
      });
    }
    if (state.mode === "http" && !state.authNeeded) {
      lines.push({ kind: "http", level: "warn", text: "Live updates need a loopback or HTTPS connection to the gateway; over this one the figures refresh every 60 s." });
    }
    const w = state.status && state.status.worker;
    if (w && !workerUp(state.status) && state.conn !== "closed") {
      const exit = w.lastExit ? ` after ${exitText(w.lastExit)}` : "";
      lines.push({
        kind: "worker",
        level: w.state === "failed" ? "bad" : "warn",
        text: `The usage worker is ${w.state}${exit} (restarts: ${w.restarts || 0}).` + (since || " Figures appear as soon as it is ready."),
      });
    }
    const err = state.usageError;
    if (err && !err.local && !err.auth) {
      const retrying = state.retryAt > Date.now() ? " Retrying automatically." : "";
      lines.push({
        kind: "error",
        level: err.retryable || err.code === "TIMEOUT" ? "warn" : "bad",
        text: `Could not load usage: ${err.message}.${retrying}${since}`,
      });
    }
    const cs = state.summary && state.summary.cacheStatus;
    if (cs && cs.status && cs.status !== "fresh" && !state.fromSnapshot) {
      const text =
        cs.status === "stale"
          ? `These figures may be out of date: the usage worker did not answer in time (restarting or busy). Showing the last good figures, from ${fmtClock(state.summaryAt)}; newer ones follow automatically.`
          : `Figures are ${cs.status}: ${fmtInt(num(cs.pendingFiles))} files pending, ${fmtInt(num(cs.staleFiles))} stale, ${fmtInt(num(cs.cachedFiles))} up to date; they update when the worker catches up.`;
      lines.push({ kind: "stale", level: "warn", text });
    }
    if (state.fromSnapshot) lines.push({ kind: "snapshot", level: "warn", text: `Showing figures saved at ${fmtTime(state.snapshotAt)} until the gateway answers.` });
    if (!state.summary && !err && state.loading && Date.now() - state.loadStartedAt > 8000) {
      lines.push({ kind: "waiting", level: "warn", text: `Still waiting for the usage worker (${(w && w.state) || "unknown"})…` });
    }
    return lines;
  }
  function renderBanner() {
    const banner = $("#banner");
    const lines = bannerLines();
    const sig = JSON.stringify(lines.map((l) => [l.kind, l.text]));
    if (banner.dataset.sig === sig) return;
    banner.dataset.sig = sig;
    banner.hidden = lines.length === 0;
    banner.className = "banner" + (lines.some((l) => l.level === "bad") ? " bad" : "");
    banner.dataset.kinds = lines.map((l) => l.kind).join(" ");
    banner.replaceChildren(
      ...lines.map((l) =>
        h("p", { data: { kind: l.kind } }, l.text, l.action ? [" ", h("button", { type: "button", class: "btn small", onclick: l.action[1], text: l.action[0] })] : null),
      ),
    );
  }
  setInterval(renderBanner, 1000);

  // ---------------------------------------------------------------- rendering: totals
  function setCard(id, raw, text, sub, title) {
    const card = $("#card-" + id);
    const value = $(".value", card);
    value.dataset.value = raw === undefined || raw === null ? "" : String(raw);
    value.textContent = text;
    if (title) value.title = title;
    else value.removeAttribute("title");
    $(".sub", card).textContent = sub;
  }
  function renderSummary() {
    const p = state.summary;
    if (!p) return;
    const t = p.totals || {};
    const a = p.aggregates || {};
    const m = a.messages || {};
    setCard("tokens", t.totalTokens, fmtInt(t.totalTokens), `input ${fmtCompact(t.input)} · output ${fmtCompact(t.output)} · cache read ${fmtCompact(t.cacheRead)} · cache write ${fmtCompact(t.cacheWrite)}`);
    const missing = num(t.missingCostEntries) ? ` · ${fmtInt(t.missingCostEntries)} without a price` : "";
    setCard("cost", t.totalCost, fmtCost(t.totalCost), `input ${fmtCost(t.inputCost)} · output ${fmtCost(t.outputCost)} · cache ${fmtCost(num(t.cacheReadCost) + num(t.cacheWriteCost))}${missing}`);
    setCard("messages", m.total, fmtInt(m.total), `${fmtInt(m.user)} user · ${fmtInt(m.assistant)} assistant · ${fmtInt(m.toolCalls)} tool calls · ${fmtInt(m.errors)} errors`);
    const count = typeof a.sessionCount === "number" ? a.sessionCount : Array.isArray(p.sessions) ? p.sessions.length : undefined;
    const agents = (a.byAgent || []).length;
    setCard("sessions", count, fmtInt(count), agents ? `${agents} agent${agents === 1 ? "" : "s"} · ${(a.byChannel || []).length} channels` : "");
    const prompt = num(t.input) + num(t.cacheRead) + num(t.cacheWrite);
    const rate = prompt ? num(t.cacheRead) / prompt : null;
    setCard("cache", rate === null ? "" : rate, fmtPct(rate), `${fmtCompact(t.cacheRead)} of ${fmtCompact(prompt)} prompt tokens read from cache`);
    renderDaily();
    renderBreakdowns();
    renderBusy();
    renderHeader();
    renderBanner();
    renderHealth();
  }

  // ---------------------------------------------------------------- rendering: daily chart
  function dailyRows() {
    const p = state.summary;
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
    const first = prefs.preset === "all" || !validDate(start) ? (days[0] && days[0].date) : start;
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
  function renderDaily() {
    const box = $("#chart");
    const { days, typed } = dailyRows();
    const cost = prefs.measure === "cost";
    $$("[data-measure]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.measure === prefs.measure)));
    if (!days.length) {
      box.replaceChildren(h("p", { class: "empty muted", text: state.summary ? "No usage in this range." : "Waiting for data…" }));
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
      const detail = typed
        ? TYPES.map((t, k) => `${TYPE_LABEL[t]} ${cost ? fmtCost(stacks[i][k]) : fmtInt(stacks[i][k])}`).join(", ")
        : "";
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

  // ---------------------------------------------------------------- rendering: breakdowns
  function breakdown(boxId, rows, first, withCount) {
    const box = $(boxId);
    if (!rows || !rows.length) {
      box.replaceChildren(h("p", { class: "muted", text: state.summary ? "Nothing in this range." : "Waiting for data…" }));
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
  }
  function renderBreakdowns() {
    const a = (state.summary && state.summary.aggregates) || {};
    breakdown("#by-model", a.byModel, ["Model", (r) => (r.provider ? r.provider + "/" : "") + (r.model || "unknown")], true);
    breakdown("#by-provider", a.byProvider, ["Provider", (r) => r.provider || "unknown"], true);
    breakdown("#by-agent", a.byAgent, ["Agent", (r) => r.agentId || "unknown"], false);
    breakdown("#by-channel", a.byChannel, ["Channel", (r) => r.channel || "unknown"], false);
  }

  // ---------------------------------------------------------------- rendering: sessions table
  function toRow(sess) {
    const u = sess.usage || {};
    const models = Array.isArray(u.modelUsage) ? u.modelUsage : [];
    let model = sess.model ? sess.model : models[0] ? models[0].model || "" : "";
    if (!sess.model && models.length > 1) model += ` +${models.length - 1}`;
    const label = sess.label || sess.displayName || sess.key;
    const channel = sess.channel || (sess.origin && sess.origin.provider) || "";
    return {
      sess,
      key: sess.key,
      label,
      agent: sess.agentId || "",
      channel,
      model,
      messages: num(u.messageCounts && u.messageCounts.total),
      tokens: num(u.totalTokens),
      cost: num(u.totalCost),
      last: num(sess.updatedAt) || num(u.lastActivity),
      text: [sess.key, label, sess.sessionId, sess.agentId, channel, model, sess.modelProvider].join(" ").toLowerCase(),
    };
  }
  let sortCache = null;
  function visibleRows() {
    const rows = state.rows || [];
    const q = state.search.trim().toLowerCase();
    const sig = `${prefs.sort}|${prefs.dir}|${q}`;
    if (sortCache && sortCache.rows === rows && sortCache.sig === sig) return sortCache.out;
    const terms = q.split(/\s+/).filter(Boolean);
    const out = terms.length ? rows.filter((r) => terms.every((t) => r.text.includes(t))) : rows.slice();
    const k = prefs.sort;
    const dir = prefs.dir;
    out.sort((a, b) => {
      const x = a[k];
      const y = b[k];
      const c = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
      return c !== 0 ? c * dir : a.key < b.key ? -1 : 1;
    });
    sortCache = { rows, sig, out };
    return out;
  }
  function renderSessions() {
    const body = $("#sessions-body");
    $$("#sessions-table th[data-sort]").forEach((th) =>
      th.setAttribute("aria-sort", th.dataset.sort === prefs.sort ? (prefs.dir > 0 ? "ascending" : "descending") : "none"),
    );
    if (!state.rows) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: "8", class: "muted", text: state.summary ? "Loading sessions…" : "Waiting for data…" })));
      $("#page-info").textContent = "";
      return;
    }
    const rows = visibleRows();
    const size = prefs.pageSize;
    const pages = Math.max(1, Math.ceil(rows.length / size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const start = state.page * size;
    const slice = rows.slice(start, start + size);
    const frag = document.createDocumentFragment();
    for (const r of slice) {
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
    if (!slice.length) frag.append(h("tr", {}, h("td", { colspan: "8", class: "muted", text: state.search ? "No session matches the search." : "No sessions in this range." })));
    body.replaceChildren(frag);
    const q = state.search.trim();
    $("#page-info").textContent = rows.length
      ? `${fmtInt(start + 1)}–${fmtInt(start + slice.length)} of ${fmtInt(rows.length)} sessions${q ? ` matching “${q}”` : ""}${state.rowsCapped ? ` (first ${fmtInt(ROW_LIMIT)} only)` : ""}`
      : "";
    $("#page-info").dataset.total = String(rows.length);
    $("#prev").disabled = state.page === 0;
    $("#next").disabled = state.page >= pages - 1;
  }

  // ---------------------------------------------------------------- session detail
  function fact(label, value) {
    return h("div", {}, h("dt", { text: label }), h("dd", { text: value }));
  }
  function openDetail(key) {
    state.detailKey = key;
    state.series = "cumulative";
    refreshDetail();
    const dlg = $("#detail");
    if (!dlg.open) dlg.showModal();
    loadTimeseries(key);
  }
  function refreshDetail() {
    const row = (state.rows || []).find((r) => r.key === state.detailKey);
    if (!row) return;
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
    const models = Array.isArray(u.modelUsage) && u.modelUsage.length ? h("div", { class: "scroll" }) : null;
    if (models) {
      breakdownInto(models, u.modelUsage);
    }
    $("#detail-body").replaceChildren(facts, models || "");
  }
  function breakdownInto(box, rows) {
    box.replaceChildren(
      h(
        "table",
        { class: "data" },
        h("caption", { class: "sr-only", text: "Models used in this session" }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Model" }), h("th", { scope: "col", class: "num", text: "Calls" }), h("th", { scope: "col", class: "num", text: "Tokens" }), h("th", { scope: "col", class: "num", text: "Cost" }))),
        h("tbody", {}, rows.map((r) => h("tr", {}, h("th", { scope: "row", text: (r.provider ? r.provider + "/" : "") + (r.model || "unknown") }), h("td", { class: "num", text: fmtInt(r.count) }), h("td", { class: "num", text: fmtInt(r.totals && r.totals.totalTokens) }), h("td", { class: "num", text: fmtCost(r.totals && r.totals.totalCost) })))),
      ),
    );
  }
  async function loadTimeseries(key) {
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
  function renderTimeseries(ts) {
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

  // ---------------------------------------------------------------- rendering: health panel
  function exitText(e) {
    const how = e.signal ? SIGNALS[e.signal] || `signal ${e.signal}` : e.code !== null && e.code !== undefined ? `exit code ${e.code}` : "";
    return `${e.cause || "exit"}${how ? " (" + how + ")" : ""}`;
  }
  function badge(text, level, field) {
    return h("span", { class: "badge " + level, data: { field }, text });
  }
  function row(label, field, ...value) {
    return [h("dt", { text: label }), h("dd", { data: { field } }, ...value)];
  }
  function renderHealth() {
    const box = $("#health-body");
    const st = state.status;
    if (!st) {
      box.replaceChildren(h("p", { class: "muted", text: state.statusError ? `Gateway status unavailable: ${state.statusError.message}` : "Waiting for the gateway…" }));
      return;
    }
    const g = st.gateway || {};
    const w = st.worker || {};
    const lag = st.eventLoop || {};
    const mem = w.memory || {};
    const cache = st.cache || {};
    const stale = state.conn === "closed" || !!state.statusError;
    const connText = state.mode === "http" ? "HTTP polling" : state.conn === "open" ? "live (WebSocket)" : state.connText;
    const wLevel = workerUp(st) ? "ok" : w.state === "failed" || w.state === "stopped" ? "bad" : "warn";
    const rss = num(w.rssBytes || mem.rssBytes);
    const cap = num(mem.capBytes);
    const ratio = cap ? rss / cap : 0;
    const meter = h("span", { class: "meter" + (ratio > 0.9 ? " full" : ratio > 0.7 ? " high" : ""), role: "meter", "aria-valuemin": "0", "aria-valuemax": String(cap || 1), "aria-valuenow": String(rss), "aria-label": "Worker memory against its cap" });
    const fill = h("span");
    fill.style.width = Math.min(100, Math.round(ratio * 100)) + "%";
    meter.append(fill);
    const byCause = Object.entries(w.restartsByCause || {}).filter(([, n]) => n > 0);
    const restarts = `${fmtInt(num(w.restarts))}${byCause.length ? " — " + byCause.map(([c, n]) => `${c} ${n}`).join(", ") : ""}`;
    const exit = w.lastExit;
    const open = $("#stderr-tail") && $("#stderr-tail").open;
    const cs = state.summary && state.summary.cacheStatus;
    const csLevel = !cs ? "warn" : cs.status === "fresh" ? "ok" : "warn";
    const lagLevel = lag.degraded ? "warn" : "ok";
    const focusTail = !!(document.activeElement && document.activeElement.closest && document.activeElement.closest("#stderr-tail"));
    box.replaceChildren(
      h(
        "div",
        { class: "health" + (stale ? " stale" : "") },
        h("h3", { text: "Gateway" }),
        h(
          "dl",
          {},
          row("Connection", "connection", connText),
          row("Version", "gateway-version", g.version || "—"),
          row("PID", "gateway-pid", String(g.pid || "—")),
          row("Uptime", "gateway-uptime", fmtDuration(g.uptimeMs)),
          row("RSS", "gateway-rss", fmtBytes(g.rssBytes)),
          row("Event-loop lag", "lag", badge(lag.degraded ? "degraded" : "ok", lagLevel, "lag-state"), ` max ${fmtLag(lag.delayMaxMs)} · p99 ${fmtLag(lag.delayP99Ms)}`),
        ),
        h("h3", { text: "Usage worker" }),
        h(
          "dl",
          {},
          row("State", "worker-state-row", badge(w.state || "unknown", wLevel, "worker-state"), w.mode ? ` (${w.mode})` : ""),
          row("PID", "worker-pid", w.pid ? String(w.pid) : "—"),
          row("Uptime", "worker-uptime", fmtDuration(w.uptimeMs)),
          row("Memory", "worker-memory", `${fmtBytes(rss)}${cap ? " of " + fmtBytes(cap) + " cap" : ""}`, meter),
          row("Heap", "worker-heap", fmtBytes(w.heapBytes)),
          row("Jobs", "worker-jobs", fmtInt(num(w.jobsInFlight)) + " in flight"),
          row("Restarts", "worker-restarts", restarts),
          row("Last exit", "last-exit", exit ? `${exitText(exit)} · ${fmtTime(exit.atMs)} (${fmtAgo(exit.atMs)})` : "none"),
        ),
        exit && exit.stderrTail
          ? h("details", { id: "stderr-tail", open: open || null }, h("summary", { text: "Last worker stderr" }), h("pre", { class: "tail", text: String(exit.stderrTail) }))
          : null,
        h("h3", { text: "Usage cache" }),
        h(
          "dl",
          {},
          row(
            "Figures",
            "cache-status-row",
            badge(cs ? cs.status : "none yet", csLevel, "cache-status"),
            cs ? ` ${fmtInt(num(cs.cachedFiles))} cached · ${fmtInt(num(cs.pendingFiles))} pending · ${fmtInt(num(cs.staleFiles))} stale` : "",
          ),
          row("Updated", "cache-updated", state.summaryAt ? `${fmtClock(state.summaryAt)} (${fmtAgo(state.summaryAt)})` : "—"),
          row("Jobs running", "cache-jobs", `${fmtInt(num(cache.jobsRunning))} of ${fmtInt(num(cache.maxJobs))}`),
          row("Answers kept", "cache-answers", `${fmtInt(num(cache.answers))} (${fmtBytes(cache.bytes)})`),
        ),
        h("p", { class: "muted", data: { field: "status-at" }, text: `Status from ${fmtClock(state.statusAt)}${state.statusError ? " · last check failed: " + state.statusError.message : ""}` }),
      ),
    );
    if (focusTail && $("#stderr-tail summary")) $("#stderr-tail summary").focus();
    box.dataset.workerPid = String(w.pid || "");
    box.dataset.restarts = String(num(w.restarts));
    box.dataset.workerState = w.state || "";
    box.dataset.gatewayPid = String(g.pid || "");
  }
  const fmtLag = (v) => (typeof v === "number" && isFinite(v) ? v.toFixed(v < 10 ? 1 : 0) + " ms" : "—");

  // ---------------------------------------------------------------- rendering: budgets
  // One bar per configured budget (`status.budgets`, refreshed by the gateway from the worker):
  // spend filled against the budget's mark, and for a month a tick at the month-end forecast.
  // The bar spans the budget, or the spend once it is over (the mark then moves left); a
  // forecast beyond that sits at the right end, dashed, its figure in the words beside it.
  // Hidden when no budget is configured.
  function renderBudgets() {
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
      h("span", { class: "budget-figures" }, words, " ", badge(verdict, level, "budget-level")),
    );
  }

  // ---------------------------------------------------------------- agents and controls
  function renderAgents() {
    const sel = $("#agent");
    const agents = Array.from(state.agents).sort();
    if (prefs.agent && !state.agents.has(prefs.agent)) agents.push(prefs.agent);
    sel.replaceChildren(h("option", { value: "", text: "All agents" }), ...agents.map((a) => h("option", { value: a, text: a })));
    sel.value = prefs.agent;
  }
  function renderControls() {
    const [start, end] = viewRange();
    $("#start").value = start;
    $("#end").value = end;
    $("#start").removeAttribute("aria-invalid");
    $("#end").removeAttribute("aria-invalid");
    $$("[data-preset]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.preset === prefs.preset)));
    $("#tz").value = prefs.tz;
    $("#tz").options[0].textContent = `Local (${utcOffset()})`;
    $("#page-size").value = String(prefs.pageSize);
  }
  function changeView() {
    savePrefs();
    renderControls();
    state.page = 0;
    renderBusy();
    if (state.summaryKey !== viewKey(viewParams())) state.usageError = null;
    loadUsage("view");
  }

  // ---------------------------------------------------------------- exports
  function csvCell(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return String(v);
    let text = String(v);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text; // no formulas from session labels
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }
  const csv = (rows) => rows.map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = h("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  }
  function fileStem() {
    const [start, end] = viewRange();
    return `clawgate-${prefs.agent || "all"}-${start}_${end}`;
  }
  const iso = (ms) => (ms ? new Date(ms).toISOString() : "");
  function exportSessions() {
    const rows = state.rows ? visibleRows() : [];
    const head = ["key", "label", "sessionId", "agentId", "channel", "modelProvider", "model", "updatedAt", "firstActivity", "lastActivity", "messages", "errors", "input", "output", "cacheRead", "cacheWrite", "totalTokens", "totalCost"];
    const body = rows.map((r) => {
      const u = r.sess.usage || {};
      return [r.key, r.label, r.sess.sessionId, r.agent, r.channel, r.sess.modelProvider, r.model, iso(r.sess.updatedAt), iso(u.firstActivity), iso(u.lastActivity), r.messages, num(u.messageCounts && u.messageCounts.errors), num(u.input), num(u.output), num(u.cacheRead), num(u.cacheWrite), r.tokens, r.cost];
    });
    download(fileStem() + "-sessions.csv", "text/csv", csv([head, ...body]));
  }
  function exportDaily() {
    const { days } = dailyRows();
    const fields = ["input", "output", "cacheRead", "cacheWrite", "totalTokens", "totalCost", "inputCost", "outputCost", "cacheReadCost", "cacheWriteCost"];
    const body = days.filter((d) => num(d.totalTokens) || num(d.totalCost)).map((d) => [d.date, ...fields.map((f) => num(d[f]))]);
    download(fileStem() + "-daily.csv", "text/csv", csv([["date", ...fields], ...body]));
  }
  function exportJson() {
    const doc = { exportedAt: new Date().toISOString(), gateway: location.host, query: viewParams(), figuresAt: iso(state.summaryAt), sessionsUsage: state.summary };
    download(fileStem() + ".json", "application/json", JSON.stringify(doc, null, 2));
  }

  // ---------------------------------------------------------------- token dialog
  function showTokenDialog() {
    const dlg = $("#token-dialog");
    $("#token-why").textContent = state.authWhy || "This gateway requires a token.";
    if (!dlg.open) dlg.showModal();
    $("#token-input").focus();
  }
  function submitToken(ev) {
    ev.preventDefault();
    const token = $("#token-input").value.trim();
    if (!token) return;
    if ($("#token-remember").checked) {
      store(KEYS.token, token);
      memoryToken = "";
    } else {
      forget(KEYS.token);
      memoryToken = token;
    }
    $("#token-input").value = "";
    $("#token-dialog").close();
    state.authNeeded = false;
    state.authWhy = "";
    state.attempt = 0;
    renderBanner();
    if (state.mode === "http") startHttpMode();
    else connect();
  }

  // ---------------------------------------------------------------- wiring
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
      renderSessions();
    });
    $("#agent").addEventListener("change", () => {
      prefs.agent = $("#agent").value;
      changeView();
    });
    $("#refresh").addEventListener("click", () => {
      if (state.mode === "ws" && !link.open) {
        state.attempt = 0;
        connect();
      } else loadUsage("manual");
    });
    $$("[data-measure]").forEach((b) =>
      b.addEventListener("click", () => {
        prefs.measure = b.dataset.measure === "cost" ? "cost" : "tokens";
        savePrefs();
        renderDaily();
      }),
    );
    $("#daily-table-box").addEventListener("toggle", () => renderDaily());
    $("#search").addEventListener(
      "input",
      debounce(() => {
        state.search = $("#search").value;
        state.page = 0;
        renderSessions();
      }, 150),
    );
    $("#page-size").addEventListener("change", () => {
      prefs.pageSize = [25, 50, 100].includes(+$("#page-size").value) ? +$("#page-size").value : 25;
      state.page = 0;
      savePrefs();
      renderSessions();
    });
    $("#prev").addEventListener("click", () => {
      state.page--;
      renderSessions();
    });
    $("#next").addEventListener("click", () => {
      state.page++;
      renderSessions();
    });
    $$("#sessions-table th[data-sort] button").forEach((b) =>
      b.addEventListener("click", () => {
        const k = b.parentElement.dataset.sort;
        if (prefs.sort === k) prefs.dir = -prefs.dir;
        else {
          prefs.sort = k;
          prefs.dir = ["label", "agent", "channel", "model"].includes(k) ? 1 : -1;
        }
        state.page = 0;
        savePrefs();
        renderSessions();
      }),
    );
    $("#sessions-body").addEventListener("click", (ev) => {
      const btn = ev.target.closest("[data-open]");
      if (btn) openDetail(btn.dataset.open);
    });
    $("#detail-close").addEventListener("click", () => $("#detail").close());
    $("#detail").addEventListener("close", () => {
      state.detailKey = "";
    });
    $$("[data-series]").forEach((b) =>
      b.addEventListener("click", () => {
        state.series = b.dataset.series === "turn" ? "turn" : "cumulative";
        const ts = state.timeseries.get(state.detailKey);
        if (ts) renderTimeseries(ts);
        else if (state.detailKey) loadTimeseries(state.detailKey);
      }),
    );
    $("#export-sessions").addEventListener("click", exportSessions);
    $("#export-daily").addEventListener("click", exportDaily);
    $("#export-json").addEventListener("click", exportJson);
    $("#token-form").addEventListener("submit", submitToken);
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
      if (!document.hidden && (state.mode === "http" || link.open)) pollStatus();
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
    renderBreakdowns();
    restoreSnapshot();
    renderBusy();
    renderHeader();
    renderSessions();
    connect();
  }
  start();
})();
