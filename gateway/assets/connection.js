// The connection's life: connect with the stored token, reconnect with backoff, notice a dead
// socket, ask for a token when refused, and fall back to HTTP polling for a remote browser that
// cannot prove a device identity.
import { loadUsage, onEvent, pollStatus, stopStatus } from "./api.js";
import { setConn } from "./banner.js";
import { link } from "./protocol.js";
import { getToken, state } from "./state.js";
import { needToken } from "./token.js";

const handlers = { open: onLinkOpen, closed: onLinkClosed, refused: onConnectRefused, event: onEvent };
let reconnectTimer = 0;
let httpTimer = 0;

export function connect() {
  clearTimeout(reconnectTimer);
  if (state.mode === "http") return startHttpMode();
  setConn("connecting", state.attempt ? `Reconnecting (attempt ${state.attempt + 1})…` : "Connecting…");
  link.connect(getToken(), handlers);
}

/** The Refresh button: reconnect when the socket is down, else reload the view now. */
export function refresh() {
  if (state.mode === "ws" && !link.open) {
    state.attempt = 0;
    connect();
  } else loadUsage("manual");
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
  stopStatus();
  if (state.authNeeded || state.mode === "http") return;
  state.attempt++;
  const delay = Math.min(5000, 250 * 2 ** Math.min(state.attempt - 1, 5)) * (0.8 + Math.random() * 0.4);
  state.reconnectAt = Date.now() + delay;
  setConn(state.everConnected ? "closed" : "connecting", state.everConnected ? "Disconnected · reconnecting…" : "Connecting…");
  reconnectTimer = setTimeout(connect, delay);
}

function startHttpMode() {
  clearInterval(httpTimer);
  setConn("polling", "Connected over HTTP (no live push)");
  pollStatus();
  loadUsage("connect");
  httpTimer = setInterval(() => !state.loading && !state.authNeeded && loadUsage("poll"), 60000);
}

/** Liveness: status answers every 2 s keep frames flowing; silence means a dead connection. */
export function watchLiveness() {
  setInterval(() => {
    if (state.mode !== "ws" || !link.open) return;
    const limit = document.hidden ? 2 * link.tickMs + 5000 : 12000;
    if (Date.now() - link.lastFrameAt > limit) link.drop("no frames from the gateway");
  }, 2000);
}

/** Checks the health at once when the tab comes back into view. */
export function pollWhenVisible() {
  if (state.mode === "http" || link.open) pollStatus();
}
