// The live alarm store and the alarm board.
//
// AlarmStore loads the open alarms once, then follows the server-sent event feed
// (/api/v1/notify/alarms): each event names an alarm, which is re-read from the alarm API so a
// row always shows what the API says (state, acknowledgement, escalation deadline). The feed
// resumes by itself after a drop (EventSource sends Last-Event-ID). A new fire alarm plays a
// tone through Web Audio once the user has turned sound on (browsers refuse audio before a
// user gesture, which is also the right default in a shared room).

import { api, API, token } from "./api.js";
import { h, clear, chip } from "./dom.js";
import { t, tData, relativeTime, absoluteTime } from "./i18n.js";

const STATE_RANK = { raised: 0, acknowledged: 1, resolved: 2 };
const SEVERITY_RANK = { critical: 0, major: 1, warning: 2, minor: 3 };
// A storm: alarms the fleet put in one group (alarms.grouping: many at one site within a
// couple of minutes) from at least this many devices are shown as one expandable line. One
// detector's own alarms (pre-alarm, then smoke, then heat: one group, because they are one
// incident) are not a storm: folding them would hide that detector's new fire alarm under its
// own pre-alarm or confirmed-fire row, so each stays a row of its own.
const STORM_DEVICES = 2;

/** Unacknowledged first, then most severe, then newest (fleet/web/state.py says the same). */
export function alarmOrder(a, b) {
  const key = (x) => [STATE_RANK[x.state] ?? 3, SEVERITY_RANK[x.severity] ?? 4,
    -Date.parse(x.raised_at), -x.id];
  const ka = key(a), kb = key(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] - kb[i];
  return 0;
}

export class AlarmStore extends EventTarget {
  constructor() {
    super();
    this.alarms = new Map();
    this.live = false;
    this.sound = false;
    this.audio = null;
    this.source = null;
  }

  async start() {
    await this.resync();
    this.connect();
  }

  /** Re-read the open alarms (at start, and after a feed that had to be re-opened). */
  async resync() {
    const open = await api("/alarms?open_only=true&limit=1000");
    for (const [id, alarm] of this.alarms) if (alarm.state !== "resolved") this.alarms.delete(id);
    for (const alarm of open) this.alarms.set(alarm.id, alarm);
    this.changed();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.source = null;
  }

  connect() {
    const url = `${API}/notify/alarms?access_token=${encodeURIComponent(token() || "")}`;
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("open", () => {
      this.live = true;
      if (this.reopened) this.resync().catch(() => {});
      this.changed();
    });
    source.addEventListener("error", () => {
      this.live = false;
      this.changed();
      // The browser retries a dropped stream itself (resuming with Last-Event-ID); a refused
      // one (an expired session, a proxy's 502) stays closed: check the session (a 401 signs
      // out), then open a new stream and re-read the open alarms it may have missed.
      if (source.readyState === EventSource.CLOSED && !this.stopped) {
        this.retry = setTimeout(() => api("/dashboard/me").then(() => {
          if (this.stopped) return;
          this.reopened = true;
          this.connect();
        }).catch(() => {}), 3000);
      }
    });
    source.addEventListener("alarm", (e) => this.onEvent(JSON.parse(e.data)));
    // A device command requested or answered (the gateway's ack): passed on to whoever shows
    // commands (the device page), as a "command" event of the store.
    source.addEventListener("command", (e) => this.dispatchEvent(
      new CustomEvent("command", { detail: JSON.parse(e.data).command })));
  }

  async onEvent(event) {
    const id = event.alarm.id;
    const isNew = !this.alarms.has(id);
    try {
      this.alarms.set(id, await api(`/alarms/${id}`));
    } catch (err) {
      if (err.status === 403 || err.status === 404) {
        this.alarms.delete(id);  // no longer visible to this user
      } else {
        // A failed read (a 503 while the database is busy, a dropped connection) says nothing
        // about the alarm: show what the event said and read it again shortly. Dropping it
        // would lose a new fire alarm from the board until its next change.
        if (!this.alarms.has(id)) this.alarms.set(id, event.alarm);
        this.reread(id);
      }
    }
    const alarm = this.alarms.get(id);
    if (alarm && isNew && event.action === "alarm.raised" && alarm.device_class === "fire"
        && alarm.state === "raised" && !alarm.flapping) {
      this.announce(alarm);
    }
    this.changed();
  }

  /** Read an alarm again after a failed read, backing off, until the API answers. */
  reread(id, delay = 1000) {
    setTimeout(async () => {
      if (this.stopped) return;
      try {
        this.alarms.set(id, await api(`/alarms/${id}`));
      } catch (err) {
        if (err.status === 403 || err.status === 404) this.alarms.delete(id);
        else if (delay < 30000) this.reread(id, delay * 2);
      }
      this.changed();
    }, delay);
  }

  replace(alarm) {
    this.alarms.set(alarm.id, alarm);
    this.changed();
  }

  announce(alarm) {
    const region = document.getElementById("announce");
    if (region) region.textContent = t("alarms.new_fire", { device: alarm.location || alarm.alarm_key });
    if (this.sound) this.beep();
  }

  setSound(on) {
    this.sound = on;
    if (on && !this.audio) this.audio = new AudioContext();
    if (on) this.beep(0.15);
    this.changed();
  }

  beep(seconds = 1.2) {
    // Two alternating tones, like a sounder: clearly an alarm, not a notification chime.
    const ctx = this.audio;
    if (!ctx) return;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "square";
    const start = ctx.currentTime;
    for (let i = 0; i * 0.3 < seconds; i++) osc.frequency.setValueAtTime(i % 2 ? 660 : 880, start + i * 0.3);
    gain.gain.setValueAtTime(0.08, start);
    gain.gain.setValueAtTime(0, start + seconds);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start);
    osc.stop(start + seconds);
    this.beeps = (this.beeps || 0) + 1;
  }

  openCount() {
    let n = 0;
    for (const a of this.alarms.values()) if (a.state !== "resolved") n++;
    return n;
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }
}

function countdown(deadline) {
  const s = Math.round((Date.parse(deadline) - Date.now()) / 1000);
  if (s <= 0) return t("alarms.overdue");
  const m = Math.floor(s / 60);
  return t("alarms.escalates_in", { t: `${m}:${String(s % 60).padStart(2, "0")}` });
}

/** Refresh every countdown and relative time on the page (called once a second). */
export function tick(root = document) {
  for (const el of root.querySelectorAll("[data-deadline]")) el.textContent = countdown(el.dataset.deadline);
}

/** Alarms whose history the user has open, by id (kept across live re-draws of the board). */
const openHistories = new Set();

function historyList(entries) {
  return h("ol.history", {}, entries.map((e) => h("li", {},
    h("time", { datetime: e.at }, absoluteTime(e.at)), " · ", h("strong", {}, e.actor), " · ",
    h("span", { title: e.action }, tData("action", e.action)), e.detail && e.detail.comment ? ` · “${e.detail.comment}”` : "")));
}

function alarmRow(alarm, ctx) {
  const device = ctx.devices.get(alarm.device_id);
  const site = device ? ctx.sites.get(device.site_id) : null;
  const act = async (verb, comment) => {
    try {
      ctx.store.replace(await api(`/alarms/${alarm.id}/${verb}`, { method: "POST", body: { comment } }));
    } catch (err) {
      ctx.flash(t("alarms.failed", { detail: err.message }));
    }
  };
  const actions = [];
  if (ctx.me.can_acknowledge && alarm.state === "raised") {
    const inputId = `ack-${alarm.id}`;
    actions.push(h("form.ack", {
      onsubmit: (e) => { e.preventDefault(); act("acknowledge", e.target.comment.value.trim()); },
    },
    h("label", { for: inputId }, t("alarms.ack_comment")),
    h("input", { id: inputId, name: "comment", type: "text", maxlength: 2000, placeholder: t("alarms.ack_placeholder") }),
    h("button.primary", { type: "submit" }, t("alarms.ack"))));
  }
  if (ctx.me.can_acknowledge && alarm.state === "acknowledged") {
    actions.push(h("button", { type: "button", onclick: () => act("resolve", "") }, t("alarms.resolve")));
  }
  // A live re-draw rebuilds every row: an open history stays open (and is read again) across it.
  const history = h("details.history", {
    open: openHistories.has(alarm.id),
    ontoggle: async (e) => {
      if (e.target.open) openHistories.add(alarm.id); else openHistories.delete(alarm.id);
      if (!e.target.open || e.target.dataset.loaded) return;
      e.target.dataset.loaded = "1";
      const entries = await api(`/alarms/${alarm.id}/history`).catch(() => []);
      e.target.append(historyList(entries));
    },
  }, h("summary", {}, t("alarms.history")));
  return h(`article.alarm.sev-${alarm.severity || "none"}.st-${alarm.state}`,
    { dataset: { alarmId: alarm.id, deviceClass: alarm.device_class }, "aria-label": tData("type", alarm.type) },
    h("div.alarm-head", {},
      chip("sev", alarm.severity || "none", alarm.severity ? tData("severity", alarm.severity) : "–"),
      chip("class", alarm.device_class, tData("class", alarm.device_class)),
      h("h3.alarm-type", {}, tData("type", alarm.type)),
      alarm.flapping ? chip("flap", "on", t("alarms.flapping")) : null,
      chip("ast", alarm.state, t(`alarm.state.${alarm.state}`))),
    h("div.alarm-where", {},
      h("a", { href: `#/device/${alarm.device_id}` }, device ? (device.name || device.key) : `#${alarm.device_id}`),
      alarm.location ? ` · ${alarm.location}` : "",
      site ? ` · ${site.name} · ${site.area}` : ""),
    h("div.alarm-when", {},
      h("time", { datetime: alarm.raised_at, title: absoluteTime(alarm.raised_at) },
        t("alarms.raised", { when: relativeTime(alarm.raised_at) })),
      " · ", alarm.active ? h("strong", {}, t("alarms.active")) : t("alarms.cleared"),
      alarm.escalation_level ? [" · ", t("alarms.escalation", { n: alarm.escalation_level })] : "",
      alarm.state === "raised" && alarm.next_escalation_at
        ? [" · ", h("span.deadline", { dataset: { deadline: alarm.next_escalation_at } }, countdown(alarm.next_escalation_at))] : ""),
    alarm.acknowledged_at ? h("div.alarm-ack", {},
      t("alarms.acked", { when: relativeTime(alarm.acknowledged_at), comment: alarm.ack_comment || "–" })) : null,
    actions.length ? h("div.alarm-actions", {}, actions) : null,
    history);
}

/** The alarm board view. */
export function mountBoard(root, ctx) {
  const filters = { area: "", cls: "", resolved: false };
  let resolved = [];
  const list = h("div.alarm-list", { "aria-live": "polite" });
  const counter = h("span.count");
  const areaSelect = h("select", { id: "filter-area", onchange: (e) => { filters.area = e.target.value; render(); } });
  const classSelect = h("select", { id: "filter-class", onchange: (e) => { filters.cls = e.target.value; render(); } },
    h("option", { value: "" }, t("class.all")),
    ctx.me.device_classes.map((c) => h("option", { value: c }, tData("class", c))));
  const resolvedBox = h("input", {
    id: "filter-resolved", type: "checkbox",
    onchange: async (e) => {
      filters.resolved = e.target.checked;
      resolved = filters.resolved ? await api("/alarms?state=resolved&limit=100").catch(() => []) : [];
      render();
    },
  });
  root.append(h("section.board", { "aria-labelledby": "board-title" },
    h("div.board-head", {},
      h("h2", { id: "board-title" }, t("alarms.title"), " ", counter),
      h("div.filters", {},
        h("label", { for: "filter-area" }, t("alarms.filter.area")), areaSelect,
        h("label", { for: "filter-class" }, t("alarms.filter.class")), classSelect,
        h("label.check", {}, resolvedBox, t("alarms.filter.resolved")))),
    list));

  function areaOptions() {
    const current = areaSelect.value;
    clear(areaSelect).append(h("option", { value: "" }, t("alarms.filter.all_areas")),
      ...ctx.areas.map((a) => h("option", { value: a.path }, "\u00a0".repeat(2 * (a.path.split("/").length - 3)) + a.name)));
    areaSelect.value = current;
  }

  function visible(alarm) {
    if (filters.cls && alarm.device_class !== filters.cls) return false;
    if (filters.area) {
      const device = ctx.devices.get(alarm.device_id);
      const site = device ? ctx.sites.get(device.site_id) : null;
      const area = site ? ctx.areasById.get(site.area_id) : null;
      if (!area || !area.path.startsWith(filters.area)) return false;
    }
    return true;
  }

  function render() {
    const rows = [...ctx.store.alarms.values()].filter((a) => filters.resolved || a.state !== "resolved");
    for (const r of resolved) if (!ctx.store.alarms.has(r.id)) rows.push(r);
    const shown = rows.filter(visible).sort(alarmOrder);
    counter.textContent = t("alarms.open_count", { n: ctx.store.openCount() });
    const expanded = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    clear(list);
    if (!shown.length) {
      list.append(h("p.empty", {}, t("alarms.empty")));
      return;
    }
    // Storms: the fleet's groups of open alarms read as one line, expandable.
    const groups = new Map();
    for (const a of shown) {
      const key = a.state === "resolved" ? `one-${a.id}` : `group-${a.group_id ?? a.id}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(a);
    }
    for (const [key, members] of groups) {
      if (new Set(members.map((a) => a.device_id)).size < STORM_DEVICES) {
        for (const a of members) list.append(alarmRow(a, ctx));
        continue;
      }
      // The most urgent member stays in view; the rest fold under one line, which names the
      // devices folded there so a detector that joined the storm reads at a glance.
      const [first, ...rest] = members;
      const device = ctx.devices.get(first.device_id);
      const site = device ? ctx.sites.get(device.site_id) : null;
      const names = [...new Set(rest.map((a) => {
        const d = ctx.devices.get(a.device_id);
        return d ? (d.name || d.key) : `#${a.device_id}`;
      }))];
      list.append(alarmRow(first, ctx), h(`details.storm.sev-${first.severity || "none"}`, { dataset: { key }, open: expanded.has(key) },
        h("summary", {}, t("alarms.group", { n: rest.length, site: site ? site.name : "?", devices: names.join(", ") })),
        rest.map((a) => alarmRow(a, ctx))));
    }
  }

  areaOptions();
  render();
  // A live re-draw must not eat what the user is typing: keep comments and focus across it.
  const onChange = () => {
    const typed = new Map([...list.querySelectorAll("input[name=comment]")].map((i) => [i.id, i.value]));
    const focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.id : "";
    render();
    for (const [id, value] of typed) {
      const input = document.getElementById(id);
      if (input) input.value = value;
    }
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  };
  ctx.store.addEventListener("change", onChange);
  ctx.onRegistry = () => { areaOptions(); render(); };
  return () => ctx.store.removeEventListener("change", onChange);
}
