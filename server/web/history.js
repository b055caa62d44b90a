// The call history view: recent calls, then one call's transcript and latency chart.
//
// It reads the server's history routes (GET /calls, GET /calls/{id}); which store answers
// them (the call records database when records are on, else this process's memory) is the
// server's choice, named in the answer's "source" (and each row's), and the page does not
// change.

import { latencyChart } from "./chart.js";
import { clear, el } from "./dom.js";
import { transcript, turnRows } from "./timings.js";
import { renderTranscript, renderTurns } from "./views.js";

export class HistorySource {
  constructor(tokenProvider) {
    this.token = tokenProvider;
  }

  async _get(path) {
    const token = this.token();
    const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (!response.ok) {
      let reason = response.statusText;
      try {
        reason = (await response.json()).detail || reason;
      } catch (_) {
        // not JSON
      }
      throw new Error(`${response.status}: ${reason}`);
    }
    return response.json();
  }

  recent(limit = 50) {
    return this._get(`/calls?limit=${limit}`);
  }

  call(callId) {
    return this._get(`/calls/${encodeURIComponent(callId)}`);
  }
}

function when(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : "–";
}

function duration(seconds) {
  return seconds == null ? "–" : `${seconds.toFixed(1)} s`;
}

const SOURCES = { memory: "this server process (memory)", records: "the call records database" };

/** Where the list came from: the records store, and from memory the calls it has not stored yet. */
export function listingStatus(answer) {
  const where = SOURCES[answer.source] || answer.source;
  const fresh = answer.calls.filter((call) => call.source && call.source !== answer.source).length;
  const extra = fresh ? ` (${fresh} not stored yet: from this server process's memory)` : "";
  return `${answer.calls.length} recent calls, from ${where}${extra}.`;
}

export class HistoryView {
  constructor(root, source, callerMeasures) {
    this.root = root;
    this.source = source;
    this.callerMeasures = callerMeasures; // callId -> measures of calls made from this page
    this.list = root.querySelector("#history-rows");
    this.status = root.querySelector("#history-status");
    this.detail = root.querySelector("#history-detail");
    root.querySelector("#history-refresh").addEventListener("click", () => this.refresh());
  }

  async refresh() {
    this.status.textContent = "Loading…";
    try {
      const answer = await this.source.recent();
      this._renderList(answer);
      this.status.textContent = listingStatus(answer);
    } catch (error) {
      this.status.textContent = `Could not load the history: ${error.message}`;
    }
  }

  _renderList(answer) {
    const calls = answer.calls;
    clear(this.list);
    if (!calls.length) {
      this.list.append(el("tr", {}, el("td", { colspan: 6, text: "No calls yet." })));
      return;
    }
    for (const call of calls) {
      const open = el("button", { type: "button", class: "link", onclick: () => this.open(call.call_id), text: call.call_id });
      this.list.append(
        el(
          "tr",
          { "data-call": call.call_id, "data-source": call.source || answer.source },
          el("th", { scope: "row" }, open),
          el("td", { text: when(call.started_at) }),
          el("td", { class: "num", text: duration(call.duration_s) }),
          el("td", { class: "num", text: String(call.turns) }),
          el("td", { class: "num", text: String(call.barge_ins) }),
          el("td", { text: call.active ? "in progress" : call.end_reason.replaceAll("_", " ") }),
        ),
      );
    }
  }

  async open(callId) {
    clear(this.detail);
    this.detail.append(el("p", { text: `Loading ${callId}…` }));
    let answer;
    try {
      answer = await this.source.call(callId);
    } catch (error) {
      clear(this.detail).append(el("p", { text: `Could not load ${callId}: ${error.message}` }));
      return;
    }
    const rows = turnRows(answer.events, this.callerMeasures.get(callId) || []);
    const list = el("ol", { class: "transcript" });
    renderTranscript(list, transcript(answer.events));
    const table = document.querySelector("#turns-template").content.cloneNode(true);
    renderTurns(table.querySelector("tbody"), rows);
    const heading = el("h3", { id: "history-detail-title", tabindex: "-1", text: `Call ${callId}` });
    const from = SOURCES[answer.source] || answer.source || SOURCES.memory;
    this.detail.dataset.source = answer.source || "memory";
    clear(this.detail).append(
      heading,
      el("p", { text: `${duration(answer.call.duration_s)}, ${answer.call.turns} turns, ${answer.call.barge_ins} barge-ins (from ${from}).` }),
      el("h4", { text: "Conversation" }),
      list,
      el("h4", { text: "Latency per turn (ms)" }),
      rows.length
        ? el("div", { class: "chart-wrap" }, latencyChart(rows, `Latency per turn of ${callId}`))
        : el("p", { text: "No turns." }),
      table,
    );
    heading.focus();
  }
}
