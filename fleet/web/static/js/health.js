// Fleet health: gateways (connectivity, outbox backlog, drops they declared), devices not
// reporting, per-device delivery accounting (produced = received + declared drops + gaps), and
// the firmware versions in the field.

import { api } from "./api.js";
import { h, table, connectivityChip } from "./dom.js";
import { t, tData, relativeTime, absoluteTime, formatNumber } from "./i18n.js";

export async function mountHealth(root) {
  const data = await api("/dashboard/health");
  const offline = data.offline_devices;
  const since = (iso) => h("time", { datetime: iso || "", title: absoluteTime(iso) }, relativeTime(iso));
  const n = (v) => formatNumber(v, 0);
  const attention = (v) => (v ? h("strong.warn", {}, n(v)) : n(v));
  root.append(h("section.health", { "aria-labelledby": "health-title" },
    h("h2", { id: "health-title" }, t("health.title")),
    h("p.summary", {}, t("health.summary", { devices: data.devices, offline: offline.length, gateways: data.gateways.length })),
    h("h3", {}, t("health.gateways")),
    table([
      { label: t("device.gateway"), value: (g) => h("strong", {}, g.name || g.key) },
      { label: t("device.connectivity"), value: (g) => connectivityChip(g.connectivity, t) },
      { label: t("device.last_seen"), value: (g) => since(g.last_seen) },
      { label: t("health.backlog"), value: (g) => attention(g.backlog), num: true },
      { label: t("health.oldest"), value: (g) => (g.oldest_age_s == null ? "–" : `${formatNumber(g.oldest_age_s, 0)} s`), num: true },
      { label: t("health.dropped"), value: (g) => attention(g.dropped_telemetry), num: true },
      { label: t("health.declared_drops"), value: (g) => attention(g.declared_drops), num: true },
      { label: t("health.gaps"), value: (g) => attention(g.gaps), num: true },
      { label: t("health.devices"), value: (g) => n(g.devices), num: true },
      { label: t("health.offline"), value: (g) => attention(g.offline_devices), num: true },
    ], data.gateways),
    h("h3", {}, t("health.offline_devices")),
    offline.length ? table([
      { label: t("alarms.device"), value: (d) => h("a", { href: `#/device/${d.id}` }, d.name || d.key) },
      { label: t("alarms.filter.class"), value: (d) => tData("class", d.device_class) },
      { label: t("device.connectivity"), value: (d) => connectivityChip(d.connectivity, t) },
      { label: t("device.gateway"), value: (d) => d.gateway },
      { label: t("device.last_seen"), value: (d) => since(d.last_seen) },
    ], offline) : h("p.empty", {}, t("health.none_offline")),
    h("h3", {}, t("health.accounting")),
    table([
      { label: t("alarms.device"), value: (r) => h("a", { href: `#/device/${r.device_id}` }, r.name || r.device) },
      { label: t("device.gateway"), value: (r) => r.gateway },
      { label: t("health.epoch"), value: (r) => h("code", {}, r.epoch.slice(0, 8)) },
      { label: t("health.produced"), value: (r) => n(r.produced), num: true },
      { label: t("health.received"), value: (r) => n(r.received), num: true },
      { label: t("health.duplicates"), value: (r) => n(r.duplicates), num: true },
      { label: t("health.declared_drops"), value: (r) => attention(r.declared_drops), num: true },
      { label: t("health.gaps"), value: (r) => attention(r.gaps), num: true },
    ], data.accounting),
    h("h3", {}, t("health.firmware")),
    table([
      { label: t("alarms.filter.class"), value: (f) => tData("class", f.device_class) },
      { label: t("health.version"), value: (f) => h("code", {}, f.version) },
      { label: t("health.count"), value: (f) => n(f.count), num: true },
    ], data.firmware)));
}
