// One catalogue (../i18n.json) for every string the page shows, English and Vietnamese.
// The language is the user's choice if made, else the browser's first language we have, else
// English. A key missing from the catalogue is shown as the key itself and recorded in
// window.__missingKeys, which the browser tests assert stays empty.

const STORE_KEY = "edgefleet.lang";
let catalogue = { en: {} };
let lang = "en";
window.__missingKeys = window.__missingKeys || [];

export async function loadCatalogue() {
  const response = await fetch("i18n.json", { cache: "no-cache" });
  catalogue = await response.json();
  lang = pickLanguage();
  document.documentElement.lang = lang;
}

export function pickLanguage() {
  const chosen = localStorage.getItem(STORE_KEY);
  if (chosen && catalogue[chosen]) return chosen;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (catalogue[base]) return base;
  }
  return "en";
}

export function languages() {
  return Object.keys(catalogue).sort();
}

export function currentLanguage() {
  return lang;
}

export function setLanguage(next) {
  if (!catalogue[next]) return;
  lang = next;
  localStorage.setItem(STORE_KEY, next);
  document.documentElement.lang = next;
}

function fill(text, vars) {
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** The string for `key` in the current language, `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = catalogue[lang][key];
  if (text === undefined) {
    window.__missingKeys.push(`${lang}:${key}`);
    return key;
  }
  return fill(text, vars);
}

/** For names that come from data (alarm types, fields): the catalogue's word if it has one. */
export function tData(prefix, name) {
  const text = catalogue[lang][`${prefix}.${name}`];
  return text === undefined ? String(name) : text;
}

export function relativeTime(iso, now = Date.now()) {
  if (!iso) return t("common.unknown");
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (s < 5) return t("time.just_now");
  if (s < 60) return t("time.ago_s", { n: s });
  if (s < 3600) return t("time.ago_m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("time.ago_h", { n: Math.floor(s / 3600) });
  return t("time.ago_d", { n: Math.floor(s / 86400) });
}

export function absoluteTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(lang === "vi" ? "vi-VN" : "en-GB");
}

export function formatNumber(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString(lang === "vi" ? "vi-VN" : "en-GB",
    { maximumFractionDigits: digits });
}
