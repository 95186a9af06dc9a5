// Direct messages: the conversation list, one open conversation, the composer.

import {
  $,
  announce,
  avatar,
  el,
  fullTime,
  reconcile,
  relativeTime,
  shortTime,
  timeEl,
} from "./dom.js";

// A user id: 1-255 characters, no control characters (docs/api.md, "User ids").
const USER_ID = /^[^\u0000-\u001f\u007f-\u009f]{1,255}$/;
const PAGE_SIZE = 30;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
// A burst of incoming messages is marked read with one request, not one each.
const MARK_SEEN_DEBOUNCE_MS = 1000;
// How often "last seen 5 min ago" is written again.
const LAST_SEEN_REFRESH_MS = 30000;

/** The chat panel of the signed-in user. */
export class Chat {
  constructor(hub, me) {
    this.hub = hub;
    this.me = me;
    this.partner = null; // the user id of the open conversation
    this.messages = new Map(); // key -> message (key: client id when known, else id)
    this.nodes = new Map(); // key -> <li>
    this.nextBefore = null;
    this.loadingOlder = false;
    this.lastTypingSent = 0;
    this.typingTimer = null;
    this.refreshTimer = null;
    this.refreshes = 0;
    this.opens = 0; // generation of the open conversation
    this.seenTimer = null;
    this.marking = false; // a mark-read request is in flight
    this.markAgain = false; // more arrived meanwhile: mark again when it settles
    this.presence = null; // the partner's {online, last_seen}, null while unknown
    this.presenceAsks = 0; // generation of presence requests: only the newest is shown

    this.recipient = $("chat-recipient");
    this.input = $("chat-input");
    this.list = $("messages");
    this.scroller = $("messages-scroll");

    this.recipient.addEventListener("change", () => this.openFromField());
    this.recipient.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.openFromField();
        this.input.focus();
      }
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (e) => {
      // Enter sends, Shift+Enter is a new line (and IME composition is left alone).
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.send();
      }
    });
    this.input.addEventListener("input", () => this.typed());
    $("messages-more").addEventListener("click", () => this.loadOlder());
    new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) this.loadOlder();
      },
      { root: this.scroller },
    ).observe($("messages-more-wrap"));
    document.addEventListener("visibilitychange", () => this.markSeen());

    hub.on("message.created", (m) => this.created(m));
    hub.on("messages.read", (d) => this.receipts(d));
    hub.on("message.deleted", (d) => this.deleted(d));
    hub.on("typing", (d) => this.typing(d));
    hub.on("presence", (d) => {
      if (d.user_id === this.partner) this.showPresence(d);
    });
    // Presence events are not replayed: ask again after every (re)connect.
    hub.on("hello", () => this.askPresence());
    setInterval(() => this.showPresence(this.presence), LAST_SEEN_REFRESH_MS);
    // Events were lost (long offline): what the open conversation shows may be stale.
    hub.on("resync", () => {
      if (this.partner) this.open(this.partner);
      else this.refreshConversations();
    });
  }

  key(m) {
    return m.client_id ? `c:${m.sender_id}:${m.client_id}` : `m:${m.id}`;
  }

  // ---- conversations ----------------------------------------------------------------

  /** Fetch the conversation list again (it is derived, so refetching is simplest). */
  refreshConversations() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(async () => {
      const generation = ++this.refreshes; // only the newest answer is shown
      try {
        const { items } = await this.hub.conversations({ limit: 50 });
        if (generation === this.refreshes) this.renderConversations(items);
      } catch {
        // Shown again on the next change or reconnect.
      }
    }, 100);
  }

  renderConversations(items) {
    const nodes = items.map((c) => {
      const last = c.last_message;
      const preview = (last.sender_id === this.me ? "You: " : "") + last.body;
      const button = el(
        "button",
        {
          type: "button",
          class: "conversation-item" + (c.user_id === this.partner ? " active" : ""),
          on: { click: () => this.open(c.user_id) },
        },
        avatar(c.user_id),
        el(
          "span",
          { class: "conversation-text" },
          el("span", { class: "conversation-name", text: c.user_id }),
          el("span", { class: "conversation-preview", text: preview }),
        ),
        el(
          "span",
          { class: "conversation-side" },
          el("span", { class: "conversation-time", text: relativeTime(last.created_at) }),
          c.unread_count
            ? el("span", {
                class: "pill",
                text: String(c.unread_count),
                attrs: { "aria-label": `${c.unread_count} unread` },
              })
            : null,
        ),
      );
      if (c.user_id === this.partner) button.setAttribute("aria-current", "true");
      return el("li", {}, button);
    });
    reconcile($("conversation-list"), nodes);
    $("conversations-empty").hidden = items.length > 0;
  }

  // ---- one conversation -------------------------------------------------------------

  openFromField() {
    const other = this.recipient.value.trim();
    if (other === this.partner) return;
    if (!USER_ID.test(other) || other === this.me) {
      if (other) this.error(other === this.me ? "That's you." : "Not a valid user id.");
      return;
    }
    this.open(other);
  }

  async open(other) {
    const opened = ++this.opens;
    this.error("");
    this.partner = other;
    this.recipient.value = other;
    this.messages.clear();
    this.nodes.clear();
    this.nextBefore = null;
    this.render();
    $("typing").textContent = "";
    this.showPresence(null);
    try {
      const page = await this.hub.conversation(other, { limit: PAGE_SIZE });
      if (this.partner !== other || this.opens !== opened) return;
      for (const m of page.items) this.put(m);
      this.askPresence();
      this.nextBefore = page.next_before;
      this.render();
      this.scrollToEnd();
      this.markSeen();
    } catch (err) {
      this.error(err.message);
    }
    this.refreshConversations();
  }

  async loadOlder() {
    if (!this.partner || this.nextBefore === null || this.loadingOlder) return;
    this.loadingOlder = true;
    const other = this.partner;
    const opened = this.opens; // open() again (or a resync) makes this page stale
    const before = this.scroller.scrollHeight - this.scroller.scrollTop;
    try {
      const page = await this.hub.conversation(other, {
        limit: PAGE_SIZE,
        before: this.nextBefore,
      });
      if (this.partner !== other || this.opens !== opened) return;
      for (const m of page.items) this.put(m);
      this.nextBefore = page.next_before;
      this.render();
      // Keep the message the user was looking at in place while older ones appear above.
      this.scroller.scrollTop = this.scroller.scrollHeight - before;
    } catch (err) {
      if (this.partner === other) this.error(err.message);
    } finally {
      this.loadingOlder = false;
    }
  }

  put(m) {
    const key = this.key(m);
    const known = this.messages.get(key);
    if (known && known.id && m.id && known.read_at && !m.read_at) m.read_at = known.read_at;
    this.messages.set(key, m);
  }

  inConversation(m) {
    return (
      (m.sender_id === this.me && m.recipient_id === this.partner) ||
      (m.sender_id === this.partner && m.recipient_id === this.me)
    );
  }

  render() {
    const sorted = [...this.messages.values()].sort(
      (a, b) => (a.id ?? Infinity) - (b.id ?? Infinity),
    );
    const keep = new Set(sorted.map((m) => this.key(m)));
    for (const k of [...this.nodes.keys()]) if (!keep.has(k)) this.nodes.delete(k);
    reconcile(this.list, sorted.map((m) => this.node(m)));
    $("messages-empty").hidden = this.partner !== null && sorted.length > 0;
    $("messages-empty").textContent = this.partner
      ? `No messages with ${this.partner} yet. Say hi!`
      : "Pick a conversation or type a user id above.";
    $("messages-more-wrap").hidden = this.nextBefore === null;
  }

  node(m) {
    const key = this.key(m);
    const mine = m.sender_id === this.me;
    let li = this.nodes.get(key);
    if (!li) {
      li = el(
        "li",
        { class: "message " + (mine ? "mine" : "theirs") },
        el("p", { class: "bubble", text: m.body, data: { testid: "chat-message" } }),
        el("p", { class: "message-meta" }),
      );
      this.nodes.set(key, li);
    }
    li.dataset.id = m.id ?? "";
    li.classList.toggle("pending", !m.id);
    li.classList.toggle("failed", Boolean(m.failed));
    const meta = li.querySelector(".message-meta");
    const parts = [m.created_at ? timeEl(m.created_at, shortTime) : null];
    if (mine) {
      const state = m.failed ? "Not sent" : !m.id ? "Sending…" : m.read_at ? "Read" : "Sent";
      parts.push(el("span", { class: "receipt " + state.toLowerCase().replace(/\W/g, ""), text: state }));
    }
    if (m.id) {
      parts.push(
        el("button", {
          type: "button",
          class: "icon-button message-delete",
          text: "×",
          title: mine ? "Delete for everyone" : "Delete for me",
          attrs: { "aria-label": mine ? "Delete for everyone" : "Delete for me" },
          on: { click: () => this.remove(m) },
        }),
      );
    }
    meta.replaceChildren(...parts.filter(Boolean));
    return li;
  }

  nearEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // ---- live events ------------------------------------------------------------------

  created(m) {
    this.refreshConversations();
    if (m.sender_id !== this.me) announce(`New message from ${m.sender_id}`);
    if (!this.inConversation(m)) return;
    const follow = this.nearEnd() || m.sender_id === this.me;
    this.put(m);
    this.render();
    if (follow) this.scrollToEnd();
    if (m.sender_id === this.partner) {
      $("typing").textContent = "";
      this.markSeen();
    }
    // The first message makes them partners: now their presence may be seen.
    if (this.presence === null) this.askPresence();
  }

  receipts({ ids, reader_id: reader }) {
    this.refreshConversations();
    const read = new Set(ids);
    const now = new Date().toISOString();
    let changed = false;
    for (const m of this.messages.values()) {
      if (read.has(m.id) && !m.read_at && m.recipient_id === reader) {
        m.read_at = now;
        changed = true;
      }
    }
    if (changed) this.render();
  }

  deleted({ id }) {
    this.refreshConversations();
    for (const [k, m] of this.messages) if (m.id === id) this.messages.delete(k);
    this.render();
  }

  typing({ user_id: who }) {
    if (who !== this.partner) return;
    $("typing").textContent = `${who} is typing…`;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => {
      $("typing").textContent = "";
    }, TYPING_SHOW_MS);
  }

  // ---- presence ---------------------------------------------------------------------

  /**
   * Fetch the partner's presence. Only partners' presence may be seen (a stranger's is
   * 403), so only once a message of the conversation is shown; hidden until then.
   */
  async askPresence() {
    const partner = this.partner;
    if (!partner || ![...this.messages.values()].some((m) => m.id)) return;
    const asked = ++this.presenceAsks;
    try {
      const { items } = await this.hub.presence([partner]);
      if (asked === this.presenceAsks && partner === this.partner) this.showPresence(items[0]);
    } catch {
      // Not a conversation partner yet, or the hub cannot tell now: show nothing.
    }
  }

  /** Show `state` ({online, last_seen}) as a dot and "online" / "last seen …". */
  showPresence(state) {
    this.presence = state;
    const box = $("presence");
    box.hidden = state === null;
    if (state === null) {
      box.dataset.state = "unknown";
      return;
    }
    box.dataset.state = state.online ? "online" : "offline";
    const text = $("presence-text");
    if (state.online) {
      text.textContent = "online";
      box.removeAttribute("title");
    } else if (state.last_seen) {
      text.textContent = "last seen " + relativeTime(state.last_seen);
      box.title = "Last seen " + fullTime(state.last_seen);
    } else {
      text.textContent = "offline";
      box.removeAttribute("title");
    }
  }

  /** Mark the open conversation read while the page is visible (debounced). */
  markSeen() {
    clearTimeout(this.seenTimer);
    this.seenTimer = setTimeout(() => this.flushSeen(), MARK_SEEN_DEBOUNCE_MS);
  }

  async flushSeen() {
    if (!this.partner || document.visibilityState !== "visible") return;
    if (this.marking) {
      this.markAgain = true; // one request at a time; the rest wait for it
      return;
    }
    const partner = this.partner;
    const unseen = [...this.messages.values()].filter(
      (m) => m.sender_id === partner && m.recipient_id === this.me && m.id && !m.read_at,
    );
    if (unseen.length === 0) return;
    this.marking = true;
    try {
      await this.hub.markMessagesRead({ userId: partner });
      // The messages.read event will say so too, but without this every message
      // arriving before it would look unseen and be marked again.
      const now = new Date().toISOString();
      for (const m of unseen) if (!m.read_at) m.read_at = now;
    } catch {
      // Retried with the next message or visibility change.
    } finally {
      this.marking = false;
    }
    if (this.markAgain) {
      this.markAgain = false;
      this.markSeen();
    }
  }

  // ---- sending ----------------------------------------------------------------------

  typed() {
    const now = Date.now();
    if (!this.partner || now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    if (this.hub.typing(this.partner)) this.lastTypingSent = now;
  }

  async send() {
    const body = this.input.value.trim();
    if (!body) return;
    if (this.recipient.value.trim() !== this.partner) this.openFromField();
    if (!this.partner) {
      this.error("Type who to write to in the To field.");
      this.recipient.focus();
      return;
    }
    this.error("");
    const clientId = "c-" + crypto.randomUUID();
    const pending = { id: null, sender_id: this.me, recipient_id: this.partner, body,
                      client_id: clientId, created_at: null, read_at: null };
    this.put(pending);
    this.render();
    this.scrollToEnd();
    this.input.value = "";
    this.lastTypingSent = 0;
    try {
      const message = await this.hub.sendMessage(pending.recipient_id, body, clientId);
      if (this.inConversation(message)) {
        this.put(message);
        this.render();
      }
    } catch (err) {
      pending.failed = true;
      this.render();
      this.error(err.message);
    }
  }

  async remove(m) {
    try {
      await this.hub.deleteMessage(m.id, { forEveryone: m.sender_id === this.me });
      this.deleted({ id: m.id });
    } catch (err) {
      this.error(err.message);
    }
  }

  error(text) {
    const box = $("chat-error");
    box.textContent = text;
    box.hidden = !text;
  }
}
