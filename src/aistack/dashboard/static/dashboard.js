// Live parts of the dashboard: periodic refresh of server-rendered fragments, and a task's
// event stream (same-origin relay) that re-renders the task as it changes. No build step.
"use strict";

// Replace a container's HTML with a fresh fragment, keeping which <details> were open and
// any diff already loaded, so a refresh never collapses what the reader has opened.
async function refreshFragment(container, url) {
  const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
  if (response.status === 401) { window.location.reload(); return false; }
  const html = await response.text();
  const open = new Set([...container.querySelectorAll("details[open][id]")].map((d) => d.id));
  const closed = new Set([...container.querySelectorAll("details[id]:not([open])")].map((d) => d.id));
  const loaded = new Map([...container.querySelectorAll("details[data-diff][data-loaded]")].map((d) => [d.id, d.querySelector("pre").textContent]));
  const focusedId = document.activeElement && container.contains(document.activeElement) ? document.activeElement.id : null;
  destroyPlots(container);
  container.innerHTML = html;
  container.querySelectorAll("details[id]").forEach((d) => {
    if (open.has(d.id)) d.open = true;
    else if (closed.has(d.id)) d.open = false;
    if (loaded.has(d.id)) { d.querySelector("pre").textContent = loaded.get(d.id); d.dataset.loaded = "1"; }
  });
  if (focusedId && document.getElementById(focusedId)) document.getElementById(focusedId).focus();
  wireDiffs(container);
  drawPlots(container);
  return true;
}

// Plots (Chart.js, vendored under static/vendor): each is drawn from the numbers of the table in
// its <figure>, so the picture and its accessible fallback never disagree. Without Chart.js (the
// file failed to load) the tables stay, open.
const SERIES = ["#1f5fbf", "#e07000", "#7b3fa0", "#00838f", "#c2185b", "#5b8c1f"];
const CHECK = { passed: ["check passed", "#1b7a3a"], failed: ["check failed", "#c0392b"], none: ["no check", "#9aa3ab"] };
const number = (text) => (text === "" || text === undefined ? null : Number(text));

function drawPlots(root) {
  const figures = root.querySelectorAll("figure[data-plot]");
  if (!window.Chart) { figures.forEach((f) => { f.querySelectorAll("details").forEach((d) => { d.open = true; }); }); return; }
  figures.forEach((figure) => PLOTS[figure.dataset.plot](figure));
}

function destroyPlots(root) {
  if (window.Chart) root.querySelectorAll("figure[data-plot] canvas").forEach((c) => { const chart = Chart.getChart(c); if (chart) chart.destroy(); });
}

function chart(canvas, type, data, options) {
  return new Chart(canvas, { type, data, options: { animation: false, maintainAspectRatio: false, ...options } });
}

const axis = (title, extra) => ({ beginAtZero: true, title: { display: true, text: title }, ...extra });

// A task's iterations: the duration as a bar coloured by the check's outcome, the tokens as a line.
function plotIterations(figure) {
  const rows = [...figure.querySelectorAll("tbody tr[data-number]")].map((r) => r.dataset);
  const bars = Object.entries(CHECK).map(([check, [label, color]]) => ({
    label: `seconds, ${label}`, backgroundColor: color, yAxisID: "y",
    data: rows.map((r) => (r.check === check ? number(r.duration) : null)),
  })).filter((set) => set.data.some((v) => v !== null));
  const tokens = { type: "line", label: "tokens", borderColor: SERIES[0], backgroundColor: SERIES[0], yAxisID: "tokens",
                   data: rows.map((r) => number(r.tokens)), pointRadius: 4 };
  chart(figure.querySelector("canvas"), "bar", { labels: rows.map((r) => `iteration ${r.number}`), datasets: [...bars, tokens] }, {
    skipNull: true,
    scales: { y: axis("seconds"), tokens: axis("tokens", { position: "right", grid: { drawOnChartArea: false } }) },
  });
}

// Every day from the first to the last, so a day without finished tasks is a gap on the axis.
function everyDay(days) {
  const sorted = [...new Set(days)].sort();
  const out = [];
  for (let d = new Date(`${sorted[0]}T00:00:00Z`); sorted.length && out.length < 3660; d.setUTCDate(d.getUTCDate() + 1)) {
    out.push(d.toISOString().slice(0, 10));
    if (out[out.length - 1] >= sorted[sorted.length - 1]) break;
  }
  return out;
}

// Rates per day: a line per group (backend or class), one plot per metric (its canvas's data-metric).
function plotDaily(figure) {
  const rows = [...figure.querySelectorAll("tbody tr[data-day]")].map((r) => r.dataset);
  const days = everyDay(rows.map((r) => r.day));
  const groups = [...new Set(rows.map((r) => r.group))];
  figure.querySelectorAll("canvas[data-metric]").forEach((canvas) => {
    const metric = canvas.dataset.metric;
    const value = (row) => (row && number(row[metric]) !== null ? number(row[metric]) * (metric === "success" ? 100 : 1) : null);
    const datasets = groups.map((group, i) => ({
      label: group, borderColor: SERIES[i % SERIES.length], backgroundColor: SERIES[i % SERIES.length], spanGaps: true, pointRadius: 4,
      data: days.map((day) => value(rows.find((r) => r.day === day && r.group === group))),
    }));
    const y = metric === "success" ? axis("%", { max: 100 }) : axis("tokens");
    chart(canvas, "line", { labels: days, datasets }, { scales: { x: { offset: true }, y }, plugins: { title: { display: true, text: canvas.dataset.title } } });
  });
}

// What the learner's proposals would save: per proposal, iterations (left axis) and tokens (right).
function plotSavings(figure) {
  const rows = [...figure.querySelectorAll("tbody tr[data-proposal]")].map((r) => r.dataset);
  const bars = (label, key, color, yAxisID) => ({ label, backgroundColor: color, yAxisID, maxBarThickness: 80,
                                                  data: rows.map((r) => number(r[key])) });
  chart(figure.querySelector("canvas"), "bar", {
    labels: rows.map((r) => r.label),
    datasets: [bars("iterations saved", "iterations", SERIES[0], "y"), bars("tokens saved", "tokens", SERIES[1], "tokens")],
  }, { scales: { y: axis("iterations"), tokens: axis("tokens", { position: "right", grid: { drawOnChartArea: false } }) } });
}

const PLOTS = { iterations: plotIterations, daily: plotDaily, savings: plotSavings };

// Diffs load when their <details> is first opened.
function wireDiffs(root) {
  root.querySelectorAll("details[data-diff]").forEach((d) => {
    const load = async () => {
      if (!d.open || d.dataset.loaded) return;
      d.dataset.loaded = "1";
      const response = await fetch(d.dataset.diff, { credentials: "same-origin" });
      d.querySelector("pre").textContent = await response.text();
    };
    d.addEventListener("toggle", load);
    load();
  });
}

function startPolling(container) {
  const interval = Number(container.dataset.interval || 0);
  if (!interval) return;
  const tick = async () => {
    try { await refreshFragment(container, container.dataset.refresh); } catch (e) { /* keep the last view */ }
    const running = container.querySelector("[data-running]");
    if (running && running.dataset.running === "false" && container.id === "deploy-log") {
      window.location.reload(); // the job ended: re-enable the buttons
      return;
    }
    setTimeout(tick, interval);
  };
  setTimeout(tick, interval);
}

const EVENT_TYPES = ["status", "iteration_started", "iteration_finished", "check", "approval_needed", "transient_retry", "end", "relay_error"];

// The agent's output as it streams: a row per chunk, stamped with the time its first character
// was read (the event's own `at`), kept scrolled to the end unless the reader scrolled up.
function appendOutput(pane, data, mark) {
  const row = document.createElement("div");
  row.className = mark ? "mark" : (data.truncated ? "chunk truncated" : "chunk");
  const time = document.createElement("time");
  time.dateTime = data.at;
  time.textContent = new Date(data.at).toLocaleTimeString();
  const text = document.createElement("span");
  text.textContent = mark || data.text;
  row.append(time, text);
  const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
  pane.appendChild(row);
  if (atEnd) pane.scrollTop = pane.scrollHeight;
}

function startTaskStream(live) {
  const log = document.getElementById("event-log");
  const state = document.getElementById("stream-state");
  let pending = null;
  let source = null;
  const refresh = () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      try { await refreshFragment(live, live.dataset.fragment); } catch (e) { return; }
      const task = live.querySelector(".task");
      if (task && task.dataset.terminal === "true" && source) {
        source.close();
        state.textContent = "task finished — stream closed";
      }
    }, 150);
  };
  const show = (type, event) => {
    const item = document.createElement("li");
    let text = event.data;
    let when = new Date();
    try {
      const data = JSON.parse(event.data);
      if (data.created_at) when = new Date(data.created_at); // when it happened, not when it arrived
      text = Object.entries(data.data || data).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    } catch (e) { /* raw */ }
    item.textContent = `${when.toLocaleTimeString()} ${type} ${text}`.slice(0, 400);
    item.dataset.type = type;
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  };
  const initial = live.querySelector(".task");
  if (initial && initial.dataset.terminal === "true") {
    state.textContent = "task finished";
    return;
  }
  source = new EventSource(live.dataset.events);
  source.onopen = () => { state.textContent = "live"; refresh(); };
  source.onerror = () => { if (source.readyState !== EventSource.CLOSED) state.textContent = "reconnecting…"; };
  source.onmessage = (event) => { show("message", event); refresh(); };
  EVENT_TYPES.forEach((type) => source.addEventListener(type, (event) => { show(type, event); refresh(); }));
  const pane = document.getElementById("live-output");
  const parsed = (event) => { try { return JSON.parse(event.data); } catch (e) { return null; } };
  source.addEventListener("output", (event) => { const e = parsed(event); if (e) appendOutput(pane, e.data); });
  source.addEventListener("iteration_started", (event) => {
    const e = parsed(event);
    if (e) appendOutput(pane, { at: e.created_at }, `iteration ${e.data.iteration}`);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireDiffs(document);
  drawPlots(document);
  document.querySelectorAll("[data-refresh]").forEach(startPolling);
  const live = document.getElementById("task-live");
  if (live) startTaskStream(live);
  // Typing a fixed limit selects "Fixed".
  const max = document.getElementById("max_iterations");
  if (max) max.addEventListener("input", () => { document.getElementById("limit_fixed").checked = true; });
});
