// A few lines of DOM building: h("tag.class", {attrs}, children). Text always goes in as text,
// never as HTML, so a device name or a comment cannot inject markup.

export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A coloured state chip: the colour and the word, never the colour alone. */
export function chip(kind, value, label) {
  return h(`span.chip.${kind}-${value}`, {}, label);
}

/** A small table: columns [{label, value(row) -> node|text, num}], rows. */
export function table(columns, rows, caption) {
  return h("div.scroll", {},
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h(c.num ? "th.num" : "th", { scope: "col" }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", {},
        columns.map((c) => h(c.num ? "td.num" : "td", { "data-label": c.label }, c.value(row))))))));
}

/** A device's or gateway's connection as a chip ("online" reads green, as "ok" does). */
export function connectivityChip(value, t) {
  return chip("state", value === "online" ? "ok" : value, t(`conn.${value}`));
}
