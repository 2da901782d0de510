// The token dialog: shown when the gateway refuses the connection for want of a token.
import { $ } from "./dom.js";
import { renderBanner, setConn } from "./banner.js";
import { link } from "./protocol.js";
import { setToken, state } from "./state.js";

export function showTokenDialog() {
  const dlg = $("#token-dialog");
  $("#token-why").textContent = state.authWhy || "This gateway requires a token.";
  if (!dlg.open) dlg.showModal();
  $("#token-input").focus();
}

/** Stops talking to the gateway until a token is entered. */
export function needToken(why) {
  state.authNeeded = true;
  state.authWhy = why;
  link.drop(null);
  setConn("auth", "Token required");
  showTokenDialog();
}

/** Takes the token from the dialog; true when there was one (the caller connects again). */
export function takeToken() {
  const token = $("#token-input").value.trim();
  if (!token) return false;
  setToken(token, $("#token-remember").checked);
  $("#token-input").value = "";
  $("#token-dialog").close();
  state.authNeeded = false;
  state.authWhy = "";
  state.attempt = 0;
  renderBanner();
  return true;
}
