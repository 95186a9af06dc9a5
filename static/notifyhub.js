// notifyhub.js: the browser client of notifyhub. Dependency-free ES modules.
//
//   import { NotifyHub } from "/static/notifyhub.js";
//   const hub = new NotifyHub({ token });          // or { getToken: async () => token }
//   hub.on("notification.created", (n) => ...);
//   hub.on("unread", (count) => ...);                // and "unseen"
//   hub.connect();
//
// Guarantees: events with a seq are delivered to listeners at most once and in order;
// after a disconnect the client resumes with `since` = the last seq it delivered, so
// nothing that happened meanwhile is missed. The tabs of one user share one connection.
// See docs/client.md. The parts, each in notifyhub/:
//
//   emitter.js     Emitter: listeners by event name
//   protocol.js    event types, CLOSE_POLICY, ERROR_STATUS, HubError
//   transports.js  WebSocketTransport, SseTransport: one interface
//   connection.js  Connection: the state machine, reconnect and backoff
//   rest.js        TokenSource, RestApi: the REST wrappers
//   share.js       Share: the leader tab holds the connection, the others follow
//   pending.js     Pending: bounded requests waiting for an answer

import { Connection } from "./notifyhub/connection.js";
import { Emitter } from "./notifyhub/emitter.js";
import { Pending } from "./notifyhub/pending.js";
import { HubError, randomId, tokenClaims } from "./notifyhub/protocol.js";
import { RestApi, TokenSource } from "./notifyhub/rest.js";
import { Share, shareKey, sharingSupported } from "./notifyhub/share.js";

export { backoffDelay, State, TRANSITIONS } from "./notifyhub/connection.js";
export {
  CLOSE_POLICY,
  DURABLE_TYPES,
  EPHEMERAL_TYPES,
  ERROR_STATUS,
  HubError,
} from "./notifyhub/protocol.js";

const ACK_TIMEOUT_MS = 8000;
const MAX_PENDING_ACKS = 256;

/** A live connection to notifyhub (shared by the user's tabs) plus its REST API. */
export class NotifyHub extends Emitter {
  /**
   * @param {object} options
   * @param {string} [options.url] hub base URL (default: this page's origin)
   * @param {string} [options.token] a user JWT
   * @param {() => Promise<string>} [options.getToken] called for a first or fresh token
   * @param {"auto"|"ws"|"sse"} [options.transport] default "auto": WebSocket, SSE fallback
   * @param {{base?: number, cap?: number}} [options.backoff] reconnect delays in ms
   * @param {boolean} [options.share] default true: one connection for the user's tabs
   */
  constructor(options = {}) {
    super();
    const base = options.url || globalThis.location.origin;
    this.url = base.replace(/\/+$/, "");
    this.transport = options.transport || "auto";
    if (!["auto", "ws", "sse"].includes(this.transport)) {
      throw new TypeError("transport must be 'auto', 'ws' or 'sse'");
    }
    this.tokens = new TokenSource(options);
    this.rest = new RestApi(this.url, this.tokens);
    this.backoff = {
      base: (options.backoff && options.backoff.base) || 500,
      cap: (options.backoff && options.backoff.cap) || 15000,
    };
    this.share = options.share !== false;

    this.status = "offline"; // connecting | connected | reconnecting | offline
    this.statusReason = null;
    this.activeTransport = null;
    this.userId = null;
    this.unread = null; // the exact unread count (null before the first hello)
    this.unseen = null; // the exact unseen count, likewise
    this.lastSeq = null; // newest seq delivered to listeners
    this.role = null; // "solo" | "leader" | "follower" while connected
    this.tabs = 0; // tabs sharing the connection (1 when solo)

    this._helloSeq = 0; // events up to here are already counted in hello.unread_count
    this._resumeAfter = null; // a new leader's first `since`: the furthest any tab got
    this._wanted = false;
    this._generation = 0; // bumped by close(): a connect() still starting gives up
    this._conn = null; // our Connection (solo or leader)
    this._share = null; // our Share (leader or follower)
    this._acks = new Pending(MAX_PENDING_ACKS, ACK_TIMEOUT_MS); // client_id -> ack
  }

  // ---- connection -------------------------------------------------------------------

  /** Start (or keep) a live connection; reconnects until `close()`. */
  connect() {
    if (this._wanted) return this;
    this._wanted = true;
    this._setStatus(this.lastSeq === null ? "connecting" : "reconnecting");
    this._start(++this._generation);
    return this;
  }

  /** Close the live connection and stop reconnecting. */
  close() {
    this._wanted = false;
    this._generation += 1;
    const share = this._share;
    this._share = null; // the followers hear of the next leader, not of this close
    if (this._conn) this._conn.stop("closed");
    this._conn = null;
    if (share) share.stop();
    this._acks.resolveAll(null);
    this._setStatus("offline", "closed");
    this.role = null;
    this.tabs = 0;
    this._shared();
  }

  /** The current token, refreshed through getToken when missing or about to expire. */
  token({ refresh = false } = {}) {
    return this.tokens.get({ refresh });
  }

  async _start(generation) {
    let key = null;
    if (this.share && sharingSupported()) {
      try {
        const claims = tokenClaims(await this.tokens.get());
        if (claims && typeof claims.sub === "string") {
          key = shareKey(this.url, this.transport, claims.sub);
        }
      } catch {
        // No token yet: a connection of our own keeps asking, with backoff.
      }
    }
    if (generation !== this._generation) return;
    if (key) {
      this._share = new Share(this, key);
      this._share.start();
    } else {
      this._lead(null, "solo");
    }
  }

  // Open our own connection: alone, or as the leader of the tabs (Share calls this).
  _lead(since, role = "leader") {
    this.role = role;
    this._resumeAfter = since;
    this._conn = new Connection({
      url: this.url,
      transport: this.transport,
      backoff: this.backoff,
      tokens: this.tokens,
      rest: this.rest,
      host: {
        since: () => (this._resumeAfter !== null ? this._resumeAfter : this.lastSeq),
        frame: (event) => {
          if (this._share) this._share.relay(event);
          this._receive(event);
          if (this._share) this._share.serveJoiners();
        },
        changed: (state, reason, kind) => {
          this.activeTransport = kind;
          this._setStatus(state, reason);
          if (this._share) this._share.statusChanged();
        },
        lost: () => this._acks.resolveAll(null),
      },
    });
    this._shared();
    this._conn.start();
  }

  // The role or the tab count changed.
  _shared() {
    if (this._share) {
      this.role = this._share.role;
      this.tabs = this._share.tabs;
    } else if (this.role === "solo") {
      this.tabs = 1;
    }
    this.emit("share", { role: this.role, tabs: this.tabs });
  }

  // A follower shows its leader's connection status.
  _mirror({ status, reason, transport }) {
    this.activeTransport = transport || null;
    this._setStatus(status, reason);
  }

  _setStatus(status, reason = null) {
    if (this.status === status && this.statusReason === reason) return;
    this.status = status;
    this.statusReason = reason;
    this.emit("status", { status, reason, transport: this.activeTransport });
  }

  _setUnread(count) {
    if (typeof count !== "number" || count === this.unread) return;
    this.unread = count;
    this.emit("unread", count);
  }

  _setUnseen(count) {
    if (typeof count !== "number" || count === this.unseen) return;
    this.unseen = count;
    this.emit("unseen", count);
  }

  // Counts from a REST answer: only while not live (live, events set them in commit order).
  _countsFrom(result) {
    if (this._live() || !result) return;
    this._setUnread(result.unread_count);
    this._setUnseen(result.unseen_count);
  }

  _live() {
    return this.status === "connected";
  }

  // The stream broke (a skipped seq): resume from the last seq delivered.
  _recover() {
    if (this.role === "follower" && this._share) this._share.rejoin();
    else if (this._conn) this._conn.restart();
  }

  // ---- incoming events (from our connection, or relayed by the leader tab) ----------

  _receive(event) {
    const { type, data } = event;
    const seq = typeof event.seq === "number" && !Number.isNaN(event.seq) ? event.seq : null;
    if (type === "hello") return this._hello(data, event);
    if (type === "ack" && data) {
      this._acks.resolve(data.client_id, data);
      return;
    }
    if (type === "error" && data && data.client_id && this._acks.has(data.client_id)) {
      this._acks.reject(data.client_id, HubError.fromFrame(data));
      return;
    }
    if (type === "resync") return this._resync(data, event);
    if (seq !== null) {
      if (this.lastSeq !== null && seq <= this.lastSeq) return; // seen already
      if (this.lastSeq !== null && seq > this.lastSeq + 1) {
        // A hole: the hub guarantees none, so the stream is broken. Resume from the
        // last seq delivered; the hub (or the leader tab) replays the missing events.
        this._recover();
        return;
      }
      this.lastSeq = seq;
      if (this._share) this._share.remember(event);
      this._count(type, seq, data);
    }
    this.emit(type, data, { type, seq, data });
  }

  _hello(data, event) {
    this.userId = data.user_id;
    this._resumeAfter = null;
    const last = typeof data.last_seq === "number" ? data.last_seq : 0;
    if (this.lastSeq === null || last < this.lastSeq) {
      // First connection (or the hub's history went backwards): start from now.
      this.lastSeq = last;
      if (this._share) this._share.forget();
    }
    // Events replayed after this hello (seq <= last) are already in unread_count.
    this._helloSeq = last;
    this._setUnread(data.unread_count);
    this._setUnseen(data.unseen_count);
    this.emit("hello", data, event);
  }

  // A follower joins: the leader's state as of its last seq, then the events after
  // our own position (or a resync when the leader no longer keeps them).
  _welcome({ hello, events }) {
    const resuming = this.lastSeq !== null;
    this._receive({ type: "hello", seq: null, data: hello });
    if (events === null && resuming) {
      this._receive({ type: "resync", seq: null, data: { reason: "history_pruned" } });
    }
    for (const event of events || []) this._receive(event);
  }

  _count(type, seq, data) {
    if (seq <= this._helloSeq || this.unread === null) return;
    if (type === "notification.created") {
      if (!data.read) this._setUnread(this.unread + 1);
      if (!data.seen && this.unseen !== null) this._setUnseen(this.unseen + 1);
    } else if (type.startsWith("notification") && data && typeof data.unread_count === "number") {
      // Every other notification event carries both counts as they are after it.
      this._setUnread(data.unread_count);
      this._setUnseen(data.unseen_count);
    }
  }

  async _resync(data, event) {
    // Our `since` is older than the hub keeps: continue from the hub's present and
    // hand listeners a fresh first page to replace whatever they hold. The unread
    // count needs no refetch: hello's count plus the live events after it is exact.
    this.lastSeq = Math.max(this.lastSeq || 0, this._helloSeq);
    if (this._share) this._share.forget();
    let page = null;
    try {
      page = await this.list({ limit: 20 });
    } catch {
      // Listeners still learn that their state is stale.
    }
    this.emit("resync", { reason: data && data.reason, notifications: page }, event);
  }

  // ---- commands over the WebSocket ----------------------------------------------------

  // A command frame with a `client_id`, sent over the live WebSocket (a follower's goes
  // through the leader tab): its ack's data, or null when it must go over REST (no
  // WebSocket, the connection dropped, no ack in 8 s, or the hub answered `unavailable`).
  // Any other error frame rejects with a HubError that keeps the hub's code.
  async _command(frame) {
    if (this.role !== "follower") return this._sendCommand(frame);
    const result = await this._share.request(frame);
    if (result.error) throw new HubError(result.error.status, result.error.problem);
    return result.fallback ? null : result.data;
  }

  async _sendCommand(frame) {
    if (!this._conn || !this._conn.canSend) return null;
    const waiting = this._acks.add(frame.client_id, () => null);
    if (!waiting) return null;
    if (!this._conn.send(frame)) this._acks.resolve(frame.client_id, null);
    try {
      return await waiting;
    } catch (err) {
      if (err instanceof HubError && err.code === "unavailable") return null;
      throw err;
    }
  }

  // A frame without an answer (typing): false unless a greeted WebSocket took it.
  _sendFrame(frame) {
    return Boolean(this._conn && this._conn.canSend && this._conn.send(frame));
  }

  /** Send a direct message: over the WebSocket with an ack when live, else REST. */
  async sendMessage(recipientId, body, clientId = randomId()) {
    const data = { recipient_id: recipientId, body };
    const ack = await this._command({ type: "message.send", client_id: clientId, data });
    // No ack: the same client_id makes the REST retry idempotent.
    if (ack === null) return this.rest.sendMessage({ ...data, client_id: clientId });
    return ack.message;
  }

  /** Mark notifications read: over the WebSocket when live, else REST; resolves to
   *  {updated, unread_count, unseen_count}. */
  async markRead(ids) {
    const frame = { type: "notifications.mark_read", client_id: randomId("r-"), data: { ids } };
    const ack = await this._command(frame);
    const result = ack === null
      ? await this.rest.markRead(ids)
      : { updated: ack.updated, unread_count: ack.unread_count, unseen_count: ack.unseen_count };
    // While live, the notifications.read event sets the counts in commit order.
    this._countsFrom(result);
    return result;
  }

  /** Tell `userId` you are typing (WebSocket only; returns whether it was sent). */
  typing(userId) {
    const frame = { type: "typing", data: { to: userId } };
    if (this.role === "follower" && this._share) return this._share.typing(frame);
    return this._sendFrame(frame);
  }

  // ---- REST (notifyhub/rest.js) -------------------------------------------------------

  /**
   * A page of a box ("inbox", "archived", "all"): {items, next_before, unread_count,
   * unseen_count}. `type` and `priority` take one value or an array; `since`/`until`
   * a Date or an RFC 3339 string (created_at from, to); `read` true/false.
   */
  list(options) {
    return this.rest.list(options);
  }

  /** Choose one of a notification's actions (once; it marks it read). Resolves to the
   * notification as it is now, with `unread_count` and `unseen_count`. */
  async act(id, actionId) {
    const result = await this.rest.act(id, actionId);
    // While live, the notification.updated event sets the counts in commit order.
    this._countsFrom(result);
    return result;
  }

  /** Mark every notification (up to `beforeId` if given) read. */
  async markAllRead(beforeId = null) {
    const result = await this.rest.markAllRead(beforeId);
    this._countsFrom(result);
    return result;
  }

  /** Mark notifications seen: `{ids}`, or `{beforeId}` (the inbox up to that position). */
  async markSeen(selection) {
    const result = await this.rest.select("seen", selection);
    this._countsFrom(result);
    return result;
  }

  /** Archive notifications: `{ids}`, or `{beforeId}` (the inbox up to that position). */
  async archive(selection) {
    const result = await this.rest.select("archive", selection);
    this._countsFrom(result);
    return result;
  }

  /** Move archived notifications back to the inbox: `{ids}` or `{beforeId}`. */
  async unarchive(selection) {
    const result = await this.rest.select("unarchive", selection);
    this._countsFrom(result);
    return result;
  }

  /** Snooze a notification until `until` (a Date or an RFC 3339 string). */
  async snooze(id, until) {
    const result = await this.rest.snooze(id, until);
    this._countsFrom(result);
    return result;
  }

  /** Delete a notification. */
  delete(id) {
    return this.rest.delete(id);
  }

  /** The unread count asked from the hub (also sets `unread` and `unseen` while not live). */
  async unreadCount() {
    return (await this.counts()).count;
  }

  /** `{count, unseen}` asked from the hub (also sets `unread` and `unseen` while not live). */
  async counts() {
    const counts = await this.rest.unreadCount();
    this._countsFrom({ unread_count: counts.count, unseen_count: counts.unseen });
    return counts;
  }

  /** Conversations, newest first: {items: [{user_id, last_message, unread_count}]}. */
  conversations(options) {
    return this.rest.conversations(options);
  }

  /** A page of the conversation with `userId`, newest first: {items, next_before}. */
  conversation(userId, options) {
    return this.rest.conversation(userId, options);
  }

  /** Mark messages read: `{ids: [...]}` or `{userId}` (the whole conversation). */
  markMessagesRead(options) {
    return this.rest.markMessagesRead(options);
  }

  /** Hide a message for yourself, or remove it for both (`forEveryone`, sender only). */
  deleteMessage(id, options) {
    return this.rest.deleteMessage(id, options);
  }

  /**
   * Who of `userIds` (1-100: yourself, your conversation partners, or anyone with an
   * admin token) is online: {items: [{user_id, online, last_seen}]}.
   */
  presence(userIds) {
    return this.rest.presence(userIds);
  }

  /** The caller's preferences. */
  getPreferences() {
    return this.rest.getPreferences();
  }

  /** Replace the caller's preferences; resolves to the stored ones. */
  putPreferences(preferences) {
    return this.rest.putPreferences(preferences);
  }

  /** Change only what `patch` names (merged per channel and per type). */
  patchPreferences(patch) {
    return this.rest.patchPreferences(patch);
  }

  /** Active announcements: {items}. */
  announcements() {
    return this.rest.announcements();
  }
}
