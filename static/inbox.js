// The bell, its unread badge and the dropdown inbox.

import { $, announce, el, reconcile, relativeTime, safeHref, timeEl } from "./dom.js";

const PAGE_SIZE = 20;

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

    this.bell = $("bell");
    this.panel = $("inbox");
    this.list = $("inbox-list");
    this.scroller = $("inbox-scroll");

    this.bell.addEventListener("click", () => this.toggle());
    $("mark-all-read").addEventListener("click", () => this.markAllRead());
    $("inbox-more").addEventListener("click", () => this.loadMore());
    $("tab-all").addEventListener("click", () => this.filter(false));
    $("tab-unread").addEventListener("click", () => this.filter(true));
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

    hub.on("unread", (count) => this.showCount(count));
    const types = [
      "notification.created",
      "notifications.read",
      "notification.deleted",
      "notification.updated",
    ];
    for (const type of types) {
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
    if (!this.loaded && !this.loading) this.reload();
  }

  close() {
    this.panel.hidden = true;
    this.bell.setAttribute("aria-expanded", "false");
  }

  showCount(count) {
    const badge = $("unread-count");
    badge.textContent = String(count);
    badge.hidden = !count;
    this.bell.setAttribute(
      "aria-label",
      count ? `Notifications, ${count} unread` : "Notifications, none unread",
    );
    document.title = (count ? `(${count}) ` : "") + "notifyhub demo";
  }

  /** Load the first page again; live events meanwhile are applied after it. */
  async reload() {
    const generation = ++this.generation;
    this.loading = true;
    this.buffer = [];
    let page;
    try {
      page = await this.hub.list({ limit: PAGE_SIZE, unreadOnly: this.unreadOnly });
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

  filter(unreadOnly) {
    this.unreadOnly = unreadOnly;
    $("tab-all").setAttribute("aria-pressed", String(!unreadOnly));
    $("tab-unread").setAttribute("aria-pressed", String(unreadOnly));
    this.reload();
  }

  /** Apply one live event to the loaded items. */
  apply(type, data) {
    if (this.buffer) {
      this.buffer.push([type, data]);
      if (type === "notification.created") announce(`New notification: ${data.title}`);
      return;
    }
    if (type === "notification.created") {
      announce(`New notification: ${data.title}`);
      if (!this.loaded) return;
      this.items.set(data.id, data);
    } else if (type === "notifications.read") {
      const ids = data.ids || [];
      const all = data.all && ids.length === 0;
      for (const n of this.items.values()) {
        if (all || ids.includes(n.id)) n.read = true;
      }
    } else if (type === "notification.deleted") {
      this.items.delete(data.id);
    } else if (type === "notification.updated") {
      // The whole notification as it is now (an action chosen, read), with the count.
      if (this.items.has(data.id)) this.items.set(data.id, withoutCount(data));
    }
    this.render();
  }

  render() {
    // In the Unread tab an item read meanwhile stays until the next reload, so it
    // does not jump out from under the pointer.
    const items = [...this.items.values()].sort((a, b) => b.id - a.id);
    const nodes = items.map((n) => this.node(n));
    for (const id of [...this.nodes.keys()]) if (!this.items.has(id)) this.nodes.delete(id);
    reconcile(this.list, nodes);
    $("inbox-empty").hidden = !this.loaded || items.length > 0;
    $("inbox-more-wrap").hidden = this.nextBefore === null;
    $("mark-all-read").disabled = !items.some((n) => !n.read) && !this.hub.unread;
  }

  node(n) {
    let li = this.nodes.get(n.id);
    if (!li) {
      li = this.build(n);
      this.nodes.set(n.id, li);
    }
    li.classList.toggle("unread", !n.read);
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
        n.body ? el("p", { class: "item-body", text: n.body }) : null,
        this.buttons(n),
        el("p", { class: "item-meta" }, timeEl(n.created_at), " · ", typeLabel(n.type)),
      ),
      el(
        "div",
        { class: "item-actions" },
        action("mark-read", "✓", "Mark as read", (i) => this.read(i)),
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
    const li = this.nodes.get(id);
    const next = li && (li.nextElementSibling || li.previousElementSibling);
    this.items.delete(id);
    this.render();
    // Keep keyboard users in the list instead of dropping focus on <body>.
    if (next) next.querySelector("button:not([hidden])")?.focus();
    try {
      await this.hub.delete(id);
    } catch {
      this.reload();
    }
  }

  async markAllRead() {
    for (const n of this.items.values()) n.read = true;
    this.render();
    // Only what the user could have seen: a notification arriving meanwhile stays unread.
    const newest = Math.max(0, ...this.items.keys());
    try {
      await this.hub.markAllRead(this.loaded && !this.unreadOnly && newest ? newest : null);
    } catch {
      this.reload();
    }
  }
}

/** A notification from `notification.updated` (or the action answer), without the
 * user's `unread_count` that travels with it. */
function withoutCount(data) {
  const { unread_count: _count, ...n } = data;
  return n;
}

/** "grade_posted" -> "Grade posted". */
export function typeLabel(type) {
  const words = String(type).replace(/[_.]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
