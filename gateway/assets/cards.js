// The totals cards, and the line above them that says which view their figures are for.
import { $, num } from "./dom.js";
import { fmtCompact, fmtCost, fmtInt, fmtPct } from "./format.js";
import { state } from "./state.js";
import { currentKey, describeView, shownSummary } from "./view.js";

function setCard(id, raw, text, sub) {
  const card = $("#card-" + id);
  const value = $(".value", card);
  value.dataset.value = raw === undefined || raw === null ? "" : String(raw);
  value.textContent = text;
  $(".sub", card).textContent = sub;
}

/** Says which range, agents and zone the figures on screen answer, and when they do not answer
 *  the selected one: loading it (the previous view's figures stay, dimmed), or failed to load. */
function renderFiguresFor() {
  const line = $("#figures-for");
  const want = describeView(currentKey());
  const shown = shownSummary();
  let kind;
  let text;
  if (shown && state.summaryKey === currentKey()) {
    kind = "current";
    text = `Figures for ${want}`;
  } else if (shown) {
    kind = "previous";
    text = `Loading ${want}… still showing ${describeView(state.summaryKey)}`;
  } else if (state.usageError) {
    kind = "missing";
    const retrying = state.retryAt > Date.now() ? " Retrying automatically." : "";
    text = `No figures for ${want}: ${state.usageError.message}.${retrying}`;
  } else {
    kind = "loading";
    text = `Loading figures for ${want}…`;
  }
  line.dataset.state = kind;
  if (line.textContent !== text) line.textContent = text;
}

export function renderCards() {
  renderFiguresFor();
  const p = shownSummary();
  if (!p) {
    const sub = state.usageError ? "not loaded" : "";
    for (const id of ["tokens", "cost", "messages", "sessions", "cache"]) setCard(id, null, "—", sub);
    return;
  }
  const t = p.totals || {};
  const a = p.aggregates || {};
  const m = a.messages || {};
  setCard("tokens", t.totalTokens, fmtInt(t.totalTokens), `input ${fmtCompact(t.input)} · output ${fmtCompact(t.output)} · cache read ${fmtCompact(t.cacheRead)} · cache write ${fmtCompact(t.cacheWrite)}`);
  const missing = num(t.missingCostEntries) ? ` · ${fmtInt(t.missingCostEntries)} without a price` : "";
  setCard("cost", t.totalCost, fmtCost(t.totalCost), `input ${fmtCost(t.inputCost)} · output ${fmtCost(t.outputCost)} · cache ${fmtCost(num(t.cacheReadCost) + num(t.cacheWriteCost))}${missing}`);
  setCard("messages", m.total, fmtInt(m.total), `${fmtInt(m.user)} user · ${fmtInt(m.assistant)} assistant · ${fmtInt(m.toolCalls)} tool calls · ${fmtInt(m.errors)} errors`);
  const count = typeof a.sessionCount === "number" ? a.sessionCount : undefined;
  const agents = (a.byAgent || []).length;
  setCard("sessions", count, fmtInt(count), agents ? `${agents} agent${agents === 1 ? "" : "s"} · ${(a.byChannel || []).length} channels` : "");
  const prompt = num(t.input) + num(t.cacheRead) + num(t.cacheWrite);
  const rate = prompt ? num(t.cacheRead) / prompt : null;
  setCard("cache", rate === null ? "" : rate, fmtPct(rate), `${fmtCompact(t.cacheRead)} of ${fmtCompact(prompt)} prompt tokens read from cache`);
}
