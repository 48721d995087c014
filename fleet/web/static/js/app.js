// The dashboard shell: sign-in, the header (navigation, live state, sound, language, user),
// the hash router (#/map, #/alarms, #/device/ID, #/health, #/updates[/ID]), and the context every view gets:
// the caller's rights, the live alarm store, and the registry as the map endpoint shapes it.

import { api, ApiError, setToken, clearToken, token, whenUnauthorized } from "./api.js";
import { h, clear } from "./dom.js";
import { t, loadCatalogue, languages, currentLanguage, setLanguage } from "./i18n.js";
import { AlarmStore, mountBoard, tick } from "./alarms.js";
import { mountMap } from "./map.js";
import { mountDevice } from "./device.js";
import { mountHealth } from "./health.js";
import { mountUpdates } from "./updates.js";

const VIEWS = {
  map: (root, ctx) => mountMap(root, ctx),
  alarms: (root, ctx) => mountBoard(root, ctx),
  health: (root) => mountHealth(root),
  device: (root, ctx, arg) => mountDevice(root, ctx, arg),
  updates: (root, ctx, arg) => mountUpdates(root, ctx, arg),
};
const NAV = [["alarms", "nav.alarms"], ["map", "nav.map"], ["health", "nav.health"],
  ["updates", "nav.updates"]];

const ctx = {
  me: null, store: null, areas: [], areasById: new Map(), siteList: [], sites: new Map(),
  devices: new Map(), unsited: [], onRegistry: null,
  flash(message) {
    const el = document.getElementById("flash");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(el.timer);
    el.timer = setTimeout(() => { el.hidden = true; }, 6000);
  },
};
let unmount = null;
let registryTimer = null;

async function loadRegistry() {
  const data = await api("/dashboard/map");
  ctx.areas = data.areas;
  ctx.areasById = new Map(data.areas.map((a) => [a.id, a]));
  ctx.siteList = data.sites;
  ctx.sites = new Map(data.sites.map((s) => [s.id, s]));
  ctx.unsited = data.unsited;
  ctx.devices = new Map();
  for (const s of data.sites) for (const d of s.devices) ctx.devices.set(d.id, d);
  for (const d of data.unsited) ctx.devices.set(d.id, d);
  if (ctx.onRegistry) ctx.onRegistry();
}

function scheduleRegistry() {
  // Alarms change device colours: re-read the registry soon after, once for a burst.
  clearTimeout(registryTimer);
  registryTimer = setTimeout(() => loadRegistry().catch(() => {}), 1000);
}

function header() {
  const route = (location.hash.split("/")[1] || "alarms");
  const top = document.getElementById("top");
  const langSelect = h("select", { id: "lang", "aria-label": t("common.language"),
    onchange: (e) => { setLanguage(e.target.value); render(); } },
  languages().map((l) => h("option", { value: l, selected: l === currentLanguage() }, l === "vi" ? "Tiếng Việt" : "English")));
  const parts = [h("a.brand", { href: "#/alarms" }, "edgefleet", h("span.brand-long", {}, " · ", t("app.title")))];
  if (ctx.me) {
    const open = ctx.store ? ctx.store.openCount() : 0;
    parts.push(h("nav", { "aria-label": t("nav.main") }, NAV.map(([name, key]) => h("a", {
      href: `#/${name}`, "aria-current": route === name ? "page" : undefined,
    }, h("span.long", {}, t(key)), h("span.short", {}, t(`${key}_short`)), name === "alarms" && open ? h("span.badge", { id: "open-badge" }, String(open)) : null))));
    parts.push(h("div.tools", {},
      h(`span.live.${ctx.store && ctx.store.live ? "on" : "off"}`, { role: "status" },
        ctx.store && ctx.store.live ? t("alarms.live") : t("alarms.reconnecting")),
      h("button.sound", { type: "button", id: "sound", "aria-pressed": String(Boolean(ctx.store && ctx.store.sound)),
        title: t("sound.hint"), onclick: () => ctx.store.setSound(!ctx.store.sound) },
      ctx.store && ctx.store.sound ? t("sound.on") : t("sound.off")),
      langSelect,
      h("span.user", {}, t("common.signed_in_as", { user: ctx.me.username, role: t(`role.${ctx.me.role}`) })),
      h("button", { type: "button", id: "logout", onclick: logout }, t("common.logout"))));
  } else {
    parts.push(h("div.tools", {}, langSelect));
  }
  clear(top).append(...parts);
}

function loginView(root, message = "") {
  const form = h("form.login", {
    onsubmit: async (e) => {
      e.preventDefault();
      const body = { username: e.target.username.value, password: e.target.password.value };
      try {
        const out = await api("/auth/login", { method: "POST", body });
        if (out.must_change_password) {
          loginView(clear(root), t("login.change_required"));
          return;
        }
        setToken(out.access_token);
        await start();
      } catch (err) {
        const locked = err instanceof ApiError && err.code === "account-locked";
        loginView(clear(root), locked ? t("login.locked") : t("login.failed"));
      }
    },
  },
  h("h2", {}, t("login.title")),
  message ? h("p.error", { role: "alert" }, message) : null,
  h("label", { for: "username" }, t("login.username")),
  h("input", { id: "username", name: "username", autocomplete: "username", required: true, autofocus: true }),
  h("label", { for: "password" }, t("login.password")),
  h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
  h("button.primary", { type: "submit" }, t("login.submit")));
  root.append(form);
  form.username.focus();
}

async function render() {
  header();
  const root = clear(document.getElementById("view"));
  if (unmount) { try { unmount(); } catch (e) { /* a view that failed to mount */ } }
  unmount = null;
  ctx.onRegistry = null;
  if (!ctx.me) {
    loginView(root);
    return;
  }
  const [, name = "alarms", arg] = location.hash.split("/");
  const view = VIEWS[name] || VIEWS.alarms;
  root.setAttribute("aria-busy", "true");
  try {
    unmount = (await view(root, ctx, arg)) || null;
  } catch (err) {
    console.error(err);
    root.append(h("p.error", { role: "alert" }, t("common.error", { detail: err && err.message ? err.message : String(err) })));
  }
  root.removeAttribute("aria-busy");
  document.title = `${t("app.title")} · edgefleet`;
}

async function start() {
  ctx.me = await api("/dashboard/me");
  await loadRegistry();
  ctx.store = new AlarmStore();
  ctx.store.addEventListener("change", () => { header(); scheduleRegistry(); });
  await ctx.store.start();
  if (!location.hash) location.hash = "#/alarms";
  await render();
}

function logout() {
  clearToken();
  if (ctx.store) ctx.store.stop();
  ctx.me = null;
  ctx.store = null;
  render();
}

async function boot() {
  await loadCatalogue();
  whenUnauthorized(() => { if (ctx.me) logout(); });
  window.addEventListener("hashchange", () => render());
  setInterval(() => tick(), 1000);
  if (token()) {
    try {
      await start();
      return;
    } catch (err) {
      clearToken();
      ctx.me = null;
    }
  }
  await render();
  document.body.dataset.ready = "1";
}

boot().finally(() => { document.body.dataset.ready = "1"; });
