// A device page: what it is and how it is, a chart per key field with its thresholds drawn,
// its alarms, its delivery accounting, and the commands the caller's role may send.
/* global uPlot */

import { api, ApiError } from "./api.js";
import { h, clear, chip, table, connectivityChip } from "./dom.js";
import { t, tData, relativeTime, absoluteTime, formatNumber } from "./i18n.js";

const THRESHOLD_COLOURS = ["#c62828", "#ef6c00", "#6a1b9a"];
const HOURS_MINUTES = uPlot.fmtDate("{HH}:{mm}");

async function drawChart(box, device, chart) {
  let series;
  try {
    series = await api(`/devices/${device.id}/telemetry?field=${encodeURIComponent(chart.field)}&step_s=15`);
  } catch (err) {
    box.append(h("p.muted", {}, err instanceof ApiError && err.code === "no-embedded-telemetry" ? t("device.charts_unavailable") : t("common.error", { detail: err.message })));
    return null;
  }
  if (!series.points.length) {
    box.append(h("p.muted", {}, t("device.no_data")));
    return null;
  }
  const xs = series.points.map((p) => Date.parse(p.t) / 1000);
  const ys = series.points.map((p) => p.mean);
  const values = ys.concat(chart.thresholds.map((l) => l.value));
  const lo = Math.min(...values), hi = Math.max(...values);
  const pad = (hi - lo) * 0.1 || 1;
  const width = Math.max(280, box.clientWidth || 600);
  // Thresholds are dashed constant series: drawn by uPlot itself and named in its legend.
  const lines = chart.thresholds.map((line, i) => ({
    label: `${tData("thr", line.name)} ${formatNumber(line.value)}`,
    stroke: THRESHOLD_COLOURS[i % THRESHOLD_COLOURS.length], width: 2, dash: [8, 6],
    points: { show: false },
  }));
  const plot = new uPlot({
    width, height: 220,
    scales: { x: { time: true }, y: { range: () => [lo - pad, hi + pad] } },
    series: [{ value: (u, v) => (v == null ? "" : HOURS_MINUTES(new Date(v * 1000))) },
      { label: tData("field", chart.field), stroke: "#1565c0", width: 2.5, points: { show: false } }, ...lines],
    axes: [{ stroke: "#37474f", values: (u, ticks) => ticks.map((v) => HOURS_MINUTES(new Date(v * 1000))) },
      { stroke: "#37474f", size: 50 }],
    legend: { live: false },
  }, [xs, ys, ...chart.thresholds.map((line) => xs.map(() => line.value))], box);
  box.dataset.points = String(xs.length);
  return plot;
}

function commandPanel(device, ctx, charts) {
  const panel = h("section.commands", { "aria-labelledby": "cmd-title" }, h("h3", { id: "cmd-title" }, t("device.commands")));
  if (!ctx.me.can_command) {
    panel.append(h("p.muted", {}, t("device.cmd.not_allowed")));
    return panel;
  }
  const log = h("ul.cmd-log", { "aria-live": "polite" });
  // fleet.control's states: pending (queued) and sent (the broker has it) wait for the gateway.
  const answered = (c) => c.state === "ok" || c.state === "failed";
  const status = (c) => (!answered(c) ? chip("cmd", "pending", t("device.cmd.pending"))
    : c.state === "ok" ? chip("cmd", "ok", t("device.cmd.ok")) : chip("cmd", "failed", t("device.cmd.failed", { error: c.error || "?" })));
  // Each action says what it did in its own words; an action this page does not know yet is
  // named by its code rather than mislabelled.
  const label = (c) => {
    const b = c.body || {};
    switch (c.action) {
      case "reset": return t("device.cmd.reset");
      case "repoll": return t("device.cmd.label.repoll");
      case "reboot": return t("device.cmd.label.reboot");
      case "write": return t("device.cmd.label.write", { register: tData("thr", b.register), value: formatNumber(b.value) });
      case "coil": return t(b.value ? "device.cmd.label.coil_on" : "device.cmd.label.coil_off", { coil: b.coil ?? 0 });
      case "ota": return b.op === "start" ? t("device.cmd.label.ota_start", { release: b.release ?? "?" })
        : b.op === "cancel" ? t("device.cmd.label.ota_cancel") : t("device.cmd.label.ota_other", { op: b.op ?? "?" });
      default: return t("device.cmd.label.other", { action: c.action });
    }
  };
  async function refresh() {
    const list = await api(`/devices/${device.id}/commands`).catch(() => []);
    clear(log).append(...(list.length ? list.map((c) => h("li", {}, h("time", { datetime: c.requested_at }, relativeTime(c.requested_at)), " · ",
      label(c), " · ", status(c))) : [h("li.muted", {}, t("common.none"))]));
    return list;
  }
  async function send(action, body) {
    let sent;
    try {
      sent = await api(`/devices/${device.id}/commands`, { method: "POST", body: { action, body } });
    } catch (err) {
      ctx.flash(t("alarms.failed", { detail: err.message }));
      await refresh();
      return;
    }
    // The ack comes back from the gateway over MQTT, usually within a second, but a busy bus or
    // a reconnecting gateway can take much longer: keep looking for this command (by its id:
    // the newest row may be another one, sent from another page), less often as time goes on,
    // until it is answered, the page is left, or three minutes pass (then it stays pending).
    const started = Date.now();
    for (let delay = 500; Date.now() - started < 180_000; delay = Math.min(delay * 1.5, 5000)) {
      const list = await refresh();
      const mine = list.find((c) => c.id === sent.id);
      if ((mine && answered(mine)) || !log.isConnected) break;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  // The live feed says when a command of this device is requested or answered (from this page
  // or any other): show it at once. The loop in send() stays as the fallback of a feed that is
  // down, and the listener goes when the page is left.
  const onCommand = (e) => {
    if (!log.isConnected) ctx.store.removeEventListener("command", onCommand);
    else if (e.detail.device_id === device.id) refresh();
  };
  if (ctx.store) ctx.store.addEventListener("command", onCommand);
  const registers = charts.flatMap((c) => c.thresholds);
  const select = h("select", { id: "cmd-register" }, registers.map((r) => h("option", { value: r.name }, `${tData("field", charts.find((c) => c.thresholds.includes(r)).field)}: ${tData("thr", r.name)}`)));
  const value = h("input", { id: "cmd-value", type: "number", step: "any", required: true });
  const range = h("span.muted");
  const showRange = () => {
    const r = registers.find((x) => x.name === select.value);
    if (!r) return;
    range.textContent = t("device.cmd.range", { min: r.min, max: r.max, unit: r.unit });
    value.min = r.min; value.max = r.max; value.placeholder = String(r.value);
  };
  select.addEventListener("change", showRange);
  const may = (action) => (ctx.me.command_actions || []).includes(action);
  panel.append(
    may("reset") ? h("button", { type: "button", onclick: () => send("reset", {}) }, t("device.cmd.reset")) : null,
    may("write") && registers.length ? h("form.cmd-write", {
      onsubmit: (e) => { e.preventDefault(); send("write", { register: select.value, value: Number(value.value) }); },
    }, h("label", { for: "cmd-register" }, t("device.cmd.register")), select,
    h("label", { for: "cmd-value" }, t("device.cmd.value")), value, range,
    h("button.primary", { type: "submit" }, t("device.cmd.write"))) : null,
    h("h4", {}, t("device.cmd.history")), log);
  showRange();
  refresh();
  return panel;
}

export async function mountDevice(root, ctx, id) {
  const d = await api(`/dashboard/devices/${id}`);
  const info = [
    [t("alarms.filter.class"), tData("class", d.device_class)],
    [t("device.connectivity"), connectivityChip(d.connectivity, t)],
    [t("device.last_seen"), h("time", { datetime: d.last_seen || "", title: absoluteTime(d.last_seen) }, relativeTime(d.last_seen))],
    [t("device.firmware"), h("code", {}, d.firmware || "–")],
    [t("device.gateway"), [d.gateway, " ", connectivityChip(d.gateway_connectivity, t)]],
    [t("device.site"), d.site ? `${d.site.name} · ${d.site.area}` : "–"],
    [t("device.address"), d.address ?? "–"],
    [t("device.faults"), d.faults.length ? d.faults.map((f) => tData("fault", f)).join(", ") : t("common.none")],
    // Status bits in words (status.* in the catalogue, one per bit of hardware/registers/);
    // a bit a newer firmware sets that this page has no words for yet is shown by its name.
    [t("device.status"), d.status.length ? d.status.map((s) => tData("status", s)).join(", ") : t("common.none")],
  ];
  if (d.link) {
    info.push([t("device.link"), t("device.link_counters", {
      bus: d.link.bus, polls: formatNumber(d.link.polls, 0), timeouts: formatNumber(d.link.timeouts, 0),
      exceptions: formatNumber(d.link.exceptions, 0), row: formatNumber(d.link.failures_in_a_row, 0) })]);
  }
  const chartsBox = h("div.charts");
  root.append(h("section.device", { "aria-labelledby": "device-title" },
    h("div.device-head", {},
      h("h2", { id: "device-title" }, d.name || d.key), chip("state", d.state, t(`state.${d.state}`)),
      h("code.muted", {}, `${d.gateway}/${d.key}`)),
    h("dl.facts", {}, info.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, t("device.charts")), chartsBox,
    h("h3", {}, t("device.alarms")),
    d.alarms.length ? table([
      { label: t("col.raised"), value: (a) => h("time", { datetime: a.raised_at }, absoluteTime(a.raised_at)) },
      { label: t("col.type"), value: (a) => tData("type", a.type) },
      { label: t("col.severity"), value: (a) => chip("sev", a.severity || "none", a.severity ? tData("severity", a.severity) : "–") },
      { label: t("col.state"), value: (a) => chip("ast", a.state, t(`alarm.state.${a.state}`)) },
      { label: t("alarms.ack_comment"), value: (a) => a.ack_comment || "" },
    ], d.alarms) : h("p.empty", {}, t("common.none")),
    h("h3", {}, t("device.accounting")),
    table([
      { label: t("health.epoch"), value: (r) => h("code", {}, r.epoch.slice(0, 8)) },
      { label: t("health.produced"), value: (r) => formatNumber(r.produced, 0), num: true },
      { label: t("health.received"), value: (r) => formatNumber(r.received, 0), num: true },
      { label: t("health.duplicates"), value: (r) => formatNumber(r.duplicates, 0), num: true },
      { label: t("health.declared_drops"), value: (r) => formatNumber(r.declared_drops, 0), num: true },
      { label: t("health.gaps"), value: (r) => formatNumber(r.gaps, 0), num: true },
    ], d.accounting),
    commandPanel(d, ctx, d.charts)));
  const plots = [];
  for (const chart of d.charts) {
    const box = h("figure.chart", { dataset: { field: chart.field } },
      h("figcaption", {}, `${tData("field", chart.field)} (${chart.unit})`));
    chartsBox.append(box);
    const plot = await drawChart(box, d, chart);
    if (plot) plots.push(plot);
  }
  return () => plots.forEach((p) => p.destroy());
}
