// The bell, its badge of unseen notifications and the dropdown inbox (with its archive).

import { $, announce, el, reconcile, relativeTime, safeHref, timeEl } from "./dom.js";

const PAGE_SIZE = 20;
const HOUR_MS = 3600 * 1000;

/** Snooze choices: a label and when, from now. */
const SNOOZES = [
  ["In 1 hour", () => new Date(Date.now() + HOUR_MS)],
  ["Tomorrow", () => atNine(1)],
  ["Next week", () => atNine(7)],
];

/** 09:00 local time `days` from today. */
function atNine(days) {
  const at = new Date();
  at.setDate(at.getDate() + days);
  at.setHours(9, 0, 0, 0);
  return at;
}

/** The inbox of the signed-in user, kept in step with the hub's live events. */
export class Inbox {
  constructor(hub) {
    this.hub = hub;
    this.items = new Map(); // id -> notification
    this.nodes = new Map(); // id -> <li>
    this.nextBefore = null;
    this.loaded = false;
    this.loading = false;
    this.buffer = null; // events that arrived while the first page was loading
    this.generation = 0; // of reload(), so only the newest one applies its page
    this.unreadOnly = false;
    this.box = "inbox"; // or "archived"
    this.seeing = false; // a markSeen request is in flight

    this.bell = $("bell");
    this.panel = $("inbox");
    this.list = $("inbox-list");
    this.scroller = $("inbox-scroll");

    this.bell.addEventListener("click", () => this.toggle());
    $("mark-all-read").addEventListener("click", () => this.markAllRead());
    $("archive-all").addEventListener("click", () => this.archiveAll());
    $("inbox-more").addEventListener("click", () => this.loadMore());
    $("tab-all").addEventListener("click", () => this.filter("inbox", false));
    $("tab-unread").addEventListener("click", () => this.filter("inbox", true));
    $("tab-archived").addEventListener("click", () => this.filter("archived", false));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.isOpen()) {
        this.close();
        this.bell.focus();
      }
    });
    document.addEventListener("click", (e) => {
      if (this.isOpen() && !e.target.closest(".bell-wrap")) this.close();
    });
    // More on scroll: load the next page when the end of the list comes into view.
    new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) this.loadMore();
      },
      { root: this.scroller, rootMargin: "120px" },
    ).observe($("inbox-more-wrap"));

    hub.on("unread", () => this.showCount());
    hub.on("unseen", () => this.showCount());
    for (const type of [
      "notification.created", "notifications.read", "notification.deleted",
      "notification.seen", "notification.archived", "notification.unarchived",
      "notification.snoozed", "notification.unsnoozed", "notification.updated",
    ]) {
      hub.on(type, (data) => this.apply(type, data));
    }
    // The client hands over a fresh page, but events may arrive while it was being
    // fetched; reloading here buffers them, which keeps the list exact.
    hub.on("resync", () => this.reload());
  }

  isOpen() {
    return !this.panel.hidden;
  }

  toggle() {
    if (this.isOpen()) this.close();
    else this.open();
  }

  open() {
    this.panel.hidden = false;
    this.bell.setAttribute("aria-expanded", "true");
    // Into the dialog, so the keyboard goes on from there (Escape returns to the bell).
    this.panel.focus();
    if (!this.loaded && !this.loading) this.reload();
    else this.markShownSeen();
  }

  close() {
    this.panel.hidden = true;
    this.bell.setAttribute("aria-expanded", "false");
  }

  /** The badge shows what is new (unseen); the dialog says how many are unread. */
  showCount() {
    const unseen = this.hub.unseen || 0;
    const unread = this.hub.unread || 0;
    const badge = $("unseen-count");
    badge.textContent = String(unseen);
    badge.hidden = !unseen;
    $("unread-count").textContent = String(unread);
    this.bell.setAttribute(
      "aria-label",
      `Notifications, ${unseen ? unseen + " new" : "none new"}, ${unread || "none"} unread`,
    );
    document.title = (unseen ? `(${unseen}) ` : "") + "notifyhub demo";
  }

  /** Load the first page again; live events meanwhile are applied after it. */
  async reload() {
    const generation = ++this.generation;
    this.loading = true;
    this.buffer = [];
    let page;
    try {
      page = await this.hub.list({ limit: PAGE_SIZE, box: this.box, unreadOnly: this.unreadOnly });
    } catch {
      page = null;
    }
    if (generation !== this.generation) return; // a newer reload owns the state now
    const pending = this.buffer;
    this.buffer = null;
    this.loading = false;
    if (page === null) {
      // The old items stay shown, so the events that arrived meanwhile still apply to
      // them; dropping them would leave the list stale until the next reload.
      if (this.loaded) for (const [type, data] of pending) this.apply(type, data);
      return;
    }
    this.replace(page);
    // Applying is idempotent, so events the page already reflects do no harm.
    for (const [type, data] of pending) this.apply(type, data);
  }

  replace(page) {
    this.items.clear();
    for (const n of page.items) this.items.set(n.id, n);
    this.nextBefore = page.next_before;
    this.loaded = true;
    this.render();
  }

  async loadMore() {
    if (!this.loaded || this.loading || this.nextBefore === null || !this.isOpen()) return;
    this.loading = true;
    const generation = this.generation;
    try {
      const page = await this.hub.list({
        limit: PAGE_SIZE,
        before: this.nextBefore,
        box: this.box,
        unreadOnly: this.unreadOnly,
      });
      // A reload (filter change, resync) started meanwhile owns the list now.
      if (generation !== this.generation) return;
      for (const n of page.items) if (!this.items.has(n.id)) this.items.set(n.id, n);
      this.nextBefore = page.next_before;
      this.render();
    } catch {
      // The next scroll to the end (or "Load more") tries again.
    } finally {
      if (generation === this.generation) this.loading = false;
    }
  }

  filter(box, unreadOnly) {
    if (box !== this.box) this.nodes.clear(); // the actions differ per box
    this.box = box;
    this.unreadOnly = unreadOnly;
    $("tab-all").setAttribute("aria-pressed", String(box === "inbox" && !unreadOnly));
    $("tab-unread").setAttribute("aria-pressed", String(unreadOnly));
    $("tab-archived").setAttribute("aria-pressed", String(box === "archived"));
    $("archive-all").hidden = box !== "inbox";
    this.reload();
  }

  /** Apply one live event to the loaded items. */
  apply(type, data) {
    if (this.buffer) {
      this.buffer.push([type, data]);
      if (type === "notification.created") announce(`New notification: ${data.title}`);
      return;
    }
    const inbox = this.box === "inbox";
    if (type === "notification.created" || type === "notification.unsnoozed") {
      const n = type === "notification.created" ? data : data.notification;
      announce(`${type === "notification.unsnoozed" ? "Back" : "New notification"}: ${n.title}`);
      if (!this.loaded) return;
      if (inbox) this.items.set(n.id, n);
      else this.items.delete(n.id);
    } else if (type === "notification.updated") {
      // A create joined its group (unread, back on top of the inbox), or its user chose
      // one of its actions (read, in place).
      const n = data.notification;
      if (!n.read) announce(`New notification: ${n.title}`);
      if (!this.loaded) return;
      // A group joined has a new title and count: built anew. A choice is drawn on the
      // same node, so keyboard focus stays on the button that made it.
      if (!n.read) this.nodes.delete(n.id);
      const here = (this.box === "archived") === Boolean(n.archived);
      if (here && (this.items.has(n.id) || !n.read)) this.items.set(n.id, n);
      else this.items.delete(n.id);
    } else if (type === "notifications.read" || type === "notification.seen") {
      const ids = data.ids || [];
      const all = data.all && ids.length === 0;
      for (const n of this.items.values()) {
        if (!all && !ids.includes(n.id)) continue;
        n.seen = true;
        if (type === "notifications.read") n.read = true;
      }
    } else if (type === "notification.deleted" || type === "notification.snoozed") {
      this.items.delete(data.id);
    } else {
      // Archived or unarchived: gone from the box it left; the box it entered lists it
      // at its place, which only a reload knows.
      const leaving = (type === "notification.archived") === inbox;
      if (leaving) for (const id of data.ids) this.items.delete(id);
      else if (this.loaded) return void this.reload();
    }
    this.render();
  }

  render() {
    // In the Unread tab an item read meanwhile stays until the next reload, so it
    // does not jump out from under the pointer.
    const items = [...this.items.values()].sort((a, b) => b.position - a.position);
    const nodes = items.map((n) => this.node(n));
    for (const id of [...this.nodes.keys()]) if (!this.items.has(id)) this.nodes.delete(id);
    reconcile(this.list, nodes);
    $("inbox-empty").hidden = !this.loaded || items.length > 0;
    $("inbox-more-wrap").hidden = this.nextBefore === null;
    $("mark-all-read").disabled = !items.some((n) => !n.read) && !this.hub.unread;
    $("archive-all").disabled = !items.length;
    this.markShownSeen();
  }

  /** While the dialog is open, what it shows is seen (on every device, by the events). */
  async markShownSeen() {
    if (!this.isOpen() || !this.loaded || this.seeing) return;
    const ids = [...this.items.values()].filter((n) => !n.seen).map((n) => n.id);
    if (!ids.length) return;
    this.seeing = true;
    try {
      await this.hub.markSeen({ ids: ids.slice(0, 1000) });
      for (const id of ids) {
        const n = this.items.get(id);
        if (n) n.seen = true;
      }
    } catch {
      // Tried again with the next change the dialog shows.
    } finally {
      this.seeing = false;
    }
  }

  node(n) {
    let li = this.nodes.get(n.id);
    if (!li) {
      li = this.build(n);
      this.nodes.set(n.id, li);
    }
    li.classList.toggle("unread", !n.read);
    li.classList.toggle("unseen", !n.seen);
    li.querySelector(".mark-read").hidden = n.read;
    li.querySelector("time").textContent = relativeTime(n.created_at);
    // Once one action is chosen, it is final: show which, and offer none again. The
    // chosen button stays focusable (aria-disabled), so keyboard focus is not lost.
    const chosen = n.action ? n.action.id : null;
    for (const button of li.querySelectorAll(".action-button")) {
      const isChosen = button.dataset.actionId === chosen;
      button.disabled = chosen !== null && !isChosen;
      button.classList.toggle("chosen", isChosen);
      button.setAttribute("aria-pressed", String(isChosen));
      if (isChosen) button.setAttribute("aria-disabled", "true");
      else button.removeAttribute("aria-disabled");
    }
    return li;
  }

  build(n) {
    // Handlers look the notification up by id: a reload replaces the objects.
    const id = n.id;
    const href = safeHref(n.link);
    const title = href
      ? el("a", {
          class: "item-title",
          href,
          text: n.title,
          attrs: { target: "_blank", rel: "noopener noreferrer" },
        })
      : el("p", { class: "item-title", text: n.title });
    const action = (cls, text, label, fn) =>
      el("button", {
        type: "button",
        class: "icon-button " + cls,
        text,
        title: label,
        attrs: { "aria-label": `${label}: ${n.title}` },
        on: {
          click: (e) => {
            e.stopPropagation();
            fn(id);
          },
        },
      });
    const li = el(
      "li",
      {
        class: "item priority-" + n.priority,
        data: { testid: "notification-item", id: String(id) },
        // Opening an item (or its link) marks it read, as in any inbox.
        on: { click: () => this.read(id) },
      },
      el("span", { class: "dot", attrs: { "aria-hidden": "true" } }),
      el(
        "div",
        { class: "item-main" },
        title,
        n.group_count > 1
          ? el("span", {
              class: "group-count",
              text: `×${n.group_count}`,
              data: { testid: "group-count" },
              attrs: { "aria-label": `${n.group_count} grouped` },
            })
          : null,
        n.body ? el("p", { class: "item-body", text: n.body }) : null,
        this.buttons(n),
        el("p", { class: "item-meta" }, timeEl(n.created_at), " · ", typeLabel(n.type)),
      ),
      el(
        "div",
        { class: "item-actions" },
        action("mark-read", "✓", "Mark as read", (i) => this.read(i)),
        this.box === "archived"
          ? action("unarchive", "↑", "Move to inbox", (i) => this.move(i, "unarchive"))
          : action("archive", "↓", "Archive", (i) => this.move(i, "archive")),
        action("snooze", "◷", "Snooze", () => this.toggleSnooze(li, id, n.title)),
        action("delete", "×", "Delete", (i) => this.remove(i)),
      ),
    );
    return li;
  }

  /** The notification's action buttons (text only), or null when it has none. */
  buttons(n) {
    const actions = n.actions || [];
    if (!actions.length) return null;
    const id = n.id;
    return el(
      "div",
      { class: "item-buttons", attrs: { role: "group", "aria-label": `Actions: ${n.title}` } },
      ...actions.map((a) =>
        el("button", {
          type: "button",
          class: "action-button action-" + (a.style === "primary" ? "primary" : "secondary"),
          text: a.label,
          data: { actionId: a.id, testid: "notification-action" },
          attrs: { "aria-pressed": "false" },
          on: {
            click: (e) => {
              e.stopPropagation();
              this.choose(id, a);
            },
          },
        }),
      ),
    );
  }

  /** Choose action `a` of notification `id`: once, final; it also marks it read. */
  async choose(id, a) {
    const n = this.items.get(id);
    if (!n || n.action) return;
    // An action's link opens now, inside the click: a window opened after an await
    // would be taken for a pop-up and blocked.
    const href = a.url ? safeHref(a.url) : null;
    if (href) window.open(href, "_blank", "noopener,noreferrer");
    n.action = { id: a.id, acted_at: new Date().toISOString() }; // optimistic
    n.read = true;
    this.render();
    announce(`Chosen: ${a.label}`);
    try {
      const updated = await this.hub.act(id, a.id);
      if (this.items.has(id)) this.items.set(id, withoutCount(updated));
      this.render();
    } catch {
      // Refused (another device chose first, it expired): show what the hub holds.
      this.reload();
    }
  }

  /** Show (or hide) the snooze choices under an item; the keyboard moves into them. */
  toggleSnooze(li, id, title) {
    const open = li.querySelector(".snooze-menu");
    if (open) {
      open.remove();
      return;
    }
    const menu = el(
      "div",
      {
        class: "snooze-menu",
        attrs: { role: "group", "aria-label": `Snooze until: ${title}` },
        on: {
          click: (e) => e.stopPropagation(),
          keydown: (e) => {
            if (e.key !== "Escape") return;
            e.stopPropagation(); // closes the menu, not the whole dialog
            menu.remove();
            li.querySelector(".snooze")?.focus();
          },
        },
      },
      el("span", { text: "Snooze until" }),
      ...SNOOZES.map(([label, when]) =>
        el("button", { type: "button", text: label, on: { click: () => this.snooze(id, when()) } }),
      ),
    );
    li.append(menu);
    menu.querySelector("button").focus();
  }

  async snooze(id, until) {
    this.leave(id);
    try {
      await this.hub.snooze(id, until);
    } catch {
      this.reload();
    }
  }

  async move(id, how) {
    this.leave(id);
    try {
      await this.hub[how]({ ids: [id] });
    } catch {
      this.reload();
    }
  }

  /** Take `id` out of the list at once, keeping keyboard focus in the list. */
  leave(id) {
    const li = this.nodes.get(id);
    const next = li && (li.nextElementSibling || li.previousElementSibling);
    this.items.delete(id);
    this.render();
    if (next) next.querySelector("button:not([hidden])")?.focus();
    else this.panel.focus();
  }

  async read(id) {
    const n = this.items.get(id);
    if (!n || n.read) return;
    n.read = true; // optimistic; the notifications.read event confirms it
    this.render();
    try {
      await this.hub.markRead([n.id]);
    } catch {
      n.read = false;
      this.render();
    }
  }

  async remove(id) {
    // Keep keyboard users in the list instead of dropping focus on <body>.
    this.leave(id);
    try {
      await this.hub.delete(id);
    } catch {
      this.reload();
    }
  }

  /** The position of the newest item shown (0: none). */
  newest() {
    return Math.max(0, ...[...this.items.values()].map((n) => n.position));
  }

  async markAllRead() {
    for (const n of this.items.values()) n.read = n.seen = true;
    this.render();
    // Only what the user could have seen: a notification arriving meanwhile stays unread.
    const newest = this.newest();
    const upTo = this.loaded && this.box === "inbox" && !this.unreadOnly && newest;
    try {
      await this.hub.markAllRead(upTo || null);
    } catch {
      this.reload();
    }
  }

  /** Archive the inbox up to the newest one shown (one arriving meanwhile stays). */
  async archiveAll() {
    const newest = this.newest();
    if (this.box !== "inbox" || !newest) return;
    this.items.clear();
    this.nextBefore = null;
    this.render();
    try {
      await this.hub.archive({ beforeId: newest });
    } finally {
      this.reload(); // the older pages not loaded yet went too
    }
  }
}

/** A notification from `notification.updated` (or the action answer), without the
 * user's `unread_count` that travels with it. */
function withoutCount(data) {
  const { unread_count: _unread, unseen_count: _unseen, ...n } = data;
  return n;
}

/** "grade_posted" -> "Grade posted". */
export function typeLabel(type) {
  const words = String(type).replace(/[_.]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
