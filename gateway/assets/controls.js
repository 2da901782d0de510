// The filter controls: presets, dates, zone, agent and page size show the preferences.
import { $, $$, h } from "./dom.js";
import { prefs, state } from "./state.js";
import { utcOffset, viewRange } from "./view.js";

/** The agent menu: every agent seen in an all-agents answer (kept across reloads). */
export function renderAgents() {
  const sel = $("#agent");
  const agents = Array.from(state.agents).sort();
  if (prefs.agent && !state.agents.has(prefs.agent)) agents.push(prefs.agent);
  sel.replaceChildren(h("option", { value: "", text: "All agents" }), ...agents.map((a) => h("option", { value: a, text: a })));
  sel.value = prefs.agent;
}

export function renderControls() {
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
