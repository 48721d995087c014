// Firmware updates: the campaigns the caller may see, each with a progress bar per wave
// (confirmed, failed, in flight, cancelled, waiting), why it halted or what a fire holds back,
// and pause / resume / cancel for the roles that may; #/updates/ID adds the per-device table
// (phase, bytes the device holds, the gateway's reason, the firmware it now reports).

import { api } from "./api.js";
import { h, clear, chip, table } from "./dom.js";
import { t, tData, relativeTime, absoluteTime, formatNumber } from "./i18n.js";

const POLL_MS = 5000;
const PARTS = ["confirmed", "failed", "in_flight", "cancelled", "pending"];
const ACTIONS = { running: ["pause", "cancel"], paused: ["resume", "cancel"], halted: ["cancel"] };

function waveBar(wave) {
  const total = wave.devices || 1;
  const title = PARTS.map((p) => `${t(`updates.part.${p}`)}: ${wave[p]}`).join(", ");
  return h("div.wave", { "data-wave": wave.wave },
    h("span.wave-label", {}, t("updates.wave_n", { n: wave.wave, devices: wave.devices })),
    h("div.bar", { role: "img", "aria-label": title, title },
      PARTS.filter((p) => wave[p] > 0).map((p) => h(`span.seg.seg-${p}`, {
        style: `width:${(100 * wave[p]) / total}%` }))));
}

function campaignCard(c, ctx, refresh) {
  const buttons = ctx.me.can_manage_ota ? (ACTIONS[c.state] || []).map((action) => h("button", {
    type: "button", "data-action": action,
    onclick: async () => {
      if (action === "cancel" && !window.confirm(t("updates.cancel_confirm", { name: c.name }))) return;
      try {
        await api(`/campaigns/${c.id}/${action}`, { method: "POST" });
      } catch (err) {
        ctx.flash(t("updates.action_failed", { detail: err.message }));
      }
      refresh();
    },
  }, t(`updates.${action}`))) : [];
  return h("article.campaign", { "data-campaign-id": c.id, "data-state": c.state },
    h("header.campaign-head", {},
      h("h3", {}, h("a", { href: `#/updates/${c.id}` }, c.name)),
      chip("camp", c.state, t(`updates.state.${c.state}`)),
      h("span.meta", {}, t("updates.release", { cls: tData("class", c.device_class), version: c.version })),
      h("span.meta", {}, t("updates.summary", { devices: c.devices, wave: c.current_wave, waves: c.wave_count,
        confirmed: c.by_state.confirmed || 0, failed: c.by_state.failed || 0 }))),
    c.halt_reason ? h("p.error", {}, t("updates.halted_because", { reason: haltReason(c) })) : null,
    c.held_by_hazard ? h("p.warn", { role: "status" }, t("updates.held", { n: c.held_by_hazard })) : null,
    h("div.waves", {}, c.wave_progress.map(waveBar)),
    buttons.length ? h("div.actions", {}, buttons) : null);
}

// Why the campaign halted, from the API's structured `halt` in the page's language; a halt
// this page does not know is shown as the fleet's own sentence.
function haltReason(c) {
  const halt = c.halt;
  if (!halt || halt.code !== "failure_rate") return c.halt_reason;
  return t("updates.halt.failure_rate", { wave: halt.wave, failed: formatNumber(halt.failed, 0),
    finished: formatNumber(halt.finished, 0), threshold: `${formatNumber(halt.threshold * 100, 1)} %` });
}

// A code's words if the catalogue has them, else null.
function known(prefix, code) {
  const word = tData(prefix, code);
  return word === String(code) ? null : word;
}

// A device's OTA reason as the fleet stores it (docs/mqtt.md): a code (`rolled_back`), a
// device's own refusal (`device_refused: unknown_key`), the gateway's refusal of the start
// (`gateway refused: busy: ...`) or `campaign cancelled`. Known codes read in the page's
// language; anything else is shown as it came, never hidden.
export function otaReason(reason) {
  if (!reason) return "–";
  let m = /^device_refused: (.+)$/.exec(reason);
  if (m) return t("ota.reason.device_refused_because", { refusal: known("ota.reason", m[1]) ?? m[1] });
  m = /^gateway refused: (.*)$/.exec(reason);
  if (m) {
    const code = /^(\w+)(?::|$)/.exec(m[1]);
    const word = code && known("ota.reason", code[1]);
    return t("ota.reason.gateway_refused", { error: word ? `${word} (${m[1]})` : m[1] });
  }
  return known("ota.reason", reason.replace(/ /g, "_")) ?? reason;
}

function deviceTable(rows) {
  const progress = (d) => (d.size ? h("progress", { max: d.size, value: d.offset,
    "aria-label": t("updates.bytes", { offset: formatNumber(d.offset, 0), size: formatNumber(d.size, 0) }) }) : "–");
  return table([
    { label: t("alarms.device"), value: (d) => h("a", { href: `#/device/${d.device_id}` }, d.device) },
    { label: t("device.gateway"), value: (d) => d.gateway },
    { label: t("updates.wave"), value: (d) => String(d.wave), num: true },
    { label: t("updates.status"), value: (d) => chip("ota", d.state, t(`updates.phase.${d.state}`)) },
    { label: t("updates.progress"), value: progress },
    { label: t("updates.reason"), value: (d) => otaReason(d.reason) },
    { label: t("updates.from"), value: (d) => h("code", {}, d.from_version || "–") },
    { label: t("updates.firmware"), value: (d) => h("code", {}, d.firmware || "–") },
    { label: t("updates.changed"), value: (d) => h("time", { datetime: d.updated_at, title: absoluteTime(d.updated_at) }, relativeTime(d.updated_at)) },
  ], rows);
}

export async function mountUpdates(root, ctx, arg) {
  const section = h("section.updates", { "aria-labelledby": "updates-title" });
  root.append(section);
  let stopped = false;
  const refresh = async () => {
    if (stopped) return;
    const id = Number(arg) || null;
    const campaigns = id ? [await api(`/campaigns/${id}`)] : await api("/campaigns");
    const devices = id ? await api(`/campaigns/${id}/devices`) : null;
    if (stopped) return;
    const parts = [
      h("h2", { id: "updates-title" }, t("updates.title")),
      id ? h("p", {}, h("a", { href: "#/updates" }, t("updates.back"))) : null,
      campaigns.length ? campaigns.map((c) => campaignCard(c, ctx, refresh))
        : h("p.empty", {}, t("updates.empty")),
      devices ? [h("h3", {}, t("updates.devices")), deviceTable(devices)] : null];
    clear(section).append(...parts.flat().filter(Boolean));
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), POLL_MS);
  return () => { stopped = true; clearInterval(timer); };
}
