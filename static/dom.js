// DOM construction for the demo page. Every string that may come from a user goes in
// as a text node: nothing here (or anywhere in the page) parses a string as markup.

/**
 * Create `<tag>` with `props` and `children`.
 * props: class, text, attrs {name: value}, data {key: value}, on {event: fn}, and any
 * other key is set as a DOM property (hidden, type, disabled, ...).
 * children: nodes, or strings (inserted as text), null/false skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "attrs") for (const [n, v] of Object.entries(value)) node.setAttribute(n, v);
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "on") for (const [n, fn] of Object.entries(value)) node.addEventListener(n, fn);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** `$("id")`: the element with that id. */
export const $ = (id) => document.getElementById(id);

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** "just now", "5 min. ago", "yesterday" for recent times; a date otherwise. */
export function relativeTime(iso) {
  const then = new Date(iso);
  const seconds = Math.round((then.getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return absolute.format(then);
}

/** The full local date and time, for tooltips. */
export const fullTime = (iso) => absolute.format(new Date(iso));

/** Hours and minutes, for chat bubbles. */
export const shortTime = (iso) => clock.format(new Date(iso));

/** A `<time>` element showing `relativeTime` with the full time as its tooltip. */
export function timeEl(iso, format = relativeTime) {
  return el("time", { text: format(iso), attrs: { datetime: iso, title: fullTime(iso) } });
}

/**
 * `link` if it is safe to put in an href (a same-site path or an http(s) URL), else
 * null: a notification's link is data, and `javascript:` must never become clickable.
 */
export function safeHref(link) {
  if (typeof link !== "string" || !link) return null;
  let url;
  try {
    // Resolved the way the browser will resolve the href: "/\\evil.example" and
    // "/\t/evil.example" look like paths but lead to another host.
    url = new URL(link, location.origin);
  } catch {
    return null;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return null;
  const relative = !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(link.trim());
  // A relative link is only fine if it stays on this site.
  if (relative && url.origin !== location.origin) return null;
  return url.href;
}

/** Say `text` to screen readers through the page's polite live region. */
export function announce(text) {
  const region = $("live-region");
  // Clearing first makes a repeated identical message be announced again.
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** The first letter of a user id, for avatars. */
export const initial = (userId) => (userId || "?").slice(0, 1).toUpperCase();

/** A stable hue (0-359) for a user id, so each person keeps one avatar colour. */
export function hue(userId) {
  let h = 0;
  for (const ch of userId || "") h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

/** An avatar circle for `userId`. */
export function avatar(userId, extraClass = "") {
  const node = el("span", { class: ("avatar " + extraClass).trim(), text: initial(userId) });
  node.setAttribute("aria-hidden", "true");
  node.dataset.hue = String(Math.floor(hue(userId) / 30)); // 12 colour classes in CSS
  return node;
}

/**
 * Make `list`'s children be exactly `nodes`, in order, moving only what is out of
 * place: rebuilding would drop keyboard focus and scroll position.
 */
export function reconcile(list, nodes) {
  const wanted = new Set(nodes);
  for (const child of [...list.children]) if (!wanted.has(child)) child.remove();
  nodes.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
}
