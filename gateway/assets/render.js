// Redraws every panel from the state: after an answer, a failure, or a change of view.
import { renderBanner, renderBusy, renderHeader } from "./banner.js";
import { renderBreakdowns } from "./breakdowns.js";
import { renderCards } from "./cards.js";
import { renderDaily } from "./chart.js";
import { renderHealth } from "./health.js";
import { renderSessions } from "./table.js";

export function renderAll() {
  renderCards();
  renderDaily();
  renderBreakdowns();
  renderSessions();
  renderBusy();
  renderHeader();
  renderBanner();
  renderHealth();
}
