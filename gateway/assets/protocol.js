// The wire: OpenClaw protocol v4 over the gateway's WebSocket (`req`/`res`/`event` frames, the
// `connect.challenge` handshake), and the token-authenticated HTTP mirror of the same methods
// (`POST /api/v1/call/<method>`). Every request has a deadline; errors come out in one shape:
// {code, message, retryable, retryAfterMs?, details?, local? (no answer from the gateway), auth?}.
import { getToken, state } from "./state.js";

export function normError(e) {
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
const timedOut = (method, timeoutMs) => ({ code: "TIMEOUT", message: `${method} got no answer within ${Math.round(timeoutMs / 1000)} s`, retryable: true });

/** The WebSocket. `handlers`: open(hello), closed(), refused(error), event(name, payload). */
export const link = {
  ws: null,
  open: false,
  pending: new Map(),
  nextId: 1,
  lastFrameAt: 0,
  tickMs: 30000,
  handlers: null,
  connect(token, handlers) {
    this.handlers = handlers;
    this.drop(null);
    let ws;
    try {
      ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    } catch (_) {
      handlers.closed();
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
        else this.handlers.event(f.event, f.payload);
      }
    };
    ws.onclose = () => {
      clearTimeout(handshake);
      if (ws !== this.ws) return;
      this.ws = null;
      this.open = false;
      this.failAll();
      this.handlers.closed();
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
        this.handlers.open(hello);
      },
      (err) => {
        clearTimeout(handshake);
        this.handlers.refused(err, token);
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
        reject(timedOut(method, timeoutMs));
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
    if (reason && this.handlers) this.handlers.closed();
  },
};

/** One call over the HTTP API, with the stored token. */
export async function httpCall(method, params, timeoutMs) {
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
    if (e && e.name === "AbortError") throw timedOut(method, timeoutMs);
    if (e && e.code) throw e;
    throw { code: "UNAVAILABLE", message: "the gateway is unreachable", retryable: true };
  } finally {
    clearTimeout(timer);
  }
}

/** One call over whichever transport the page uses. */
export function call(method, params, timeoutMs) {
  return state.mode === "http" ? httpCall(method, params, timeoutMs) : link.request(method, params, timeoutMs, false);
}
