// Rendering shared by the live call and the history view: transcript and turn table.

import { clear, el, ms } from "./dom.js";

export function renderTranscript(list, lines, interim = "") {
  clear(list);
  for (const line of lines) {
    if (line.who === "caller") {
      list.append(el("li", { class: "said-caller" }, el("span", { class: "who", text: "You" }), " ", line.text));
    } else if (line.who === "agent") {
      const heard = line.heard ?? line.text;
      const rest = line.text.startsWith(heard) ? line.text.slice(heard.length) : "";
      list.append(
        el(
          "li",
          { class: "said-agent" },
          el("span", { class: "who", text: "Agent" }),
          " ",
          heard,
          rest ? el("del", { title: "not heard: the caller interrupted", text: rest }) : null,
        ),
      );
    } else if (line.who === "barge-in") {
      list.append(el("li", { class: "said-bargein", text: `You interrupted: “${line.text}”` }));
    }
  }
  if (interim) {
    list.append(el("li", { class: "said-interim" }, el("span", { class: "who", text: "You" }), " ", interim, "…"));
  }
}

export function renderTurns(tbody, rows, greetingMs = null) {
  clear(tbody);
  if (greetingMs != null) {
    tbody.append(
      el(
        "tr",
        { "data-turn": "greeting" },
        el("th", { scope: "row", text: "Greeting" }),
        el("td", { class: "said", text: "(call answered)" }),
        el("td", { colspan: 2, text: `first audio ${ms(greetingMs)} ms after connecting` }),
        el("td", { colspan: 4, text: "" }),
        el("td", { text: "played" }),
      ),
    );
  }
  for (const row of rows) {
    tbody.append(
      el(
        "tr",
        { "data-turn": row.turn },
        el("th", { scope: "row", text: String(row.turn) }),
        el("td", { class: "said", text: row.said }),
        el("td", { class: "num", "data-field": "callerSide", text: ms(row.callerSide) }),
        el("td", { class: "num", "data-field": "endOfSpeechToAudio", text: ms(row.endOfSpeechToAudio) }),
        el("td", { class: "num", "data-field": "sttToLlm", text: ms(row.sttToLlm) }),
        el("td", { class: "num", "data-field": "llmToTts", text: ms(row.llmToTts) }),
        el("td", { class: "num", "data-field": "ttsToSent", text: ms(row.ttsToSent) }),
        el("td", { class: "num", "data-field": "sttToAudio", text: ms(row.sttToAudio) }),
        el("td", { "data-field": "outcome", text: row.bargeIns ? `${row.outcome}, barge-in` : row.outcome }),
      ),
    );
  }
}
