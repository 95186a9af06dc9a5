// notifyhub.js: the browser client of notifyhub. A dependency-free ES module.
//
//   import { NotifyHub } from "/static/notifyhub.js";
//   const hub = new NotifyHub({ token });          // or { getToken: async () => token }
//   hub.on("notification.created", (n) => ...);
//   hub.on("unread", (count) => ...);                // and "unseen"
//   hub.connect();
//
// Guarantees: events with a seq are delivered to listeners at most once and in order;
// after a disconnect the client resumes with `since` = the last seq it delivered, so
// nothing that happened meanwhile is missed. See docs/client.md.

/** Event types that are durable user events (they carry a seq). */
export const DURABLE_TYPES = [
  "notification.created",
  "notifications.read",
  "notification.deleted",
  "notification.seen",
  "notification.archived",
  "notification.unarchived",
  "notification.snoozed",
  "notification.unsnoozed",
  "notification.updated",
  "message.created",
  "messages.read",
  "message.deleted",
];

/** Event types that are ephemeral (seq null). */
export const EPHEMERAL_TYPES = [
  "hello",
  "announcement.created",
  "announcement.deleted",
  "typing",
  "presence",
  "resync",
  "pong",
  "ack",
  "error",
];

/** An error answered by the hub's REST API (an RFC 9457 problem). */
export class HubError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.name = "HubError";
    this.status = status;
    this.problem = problem || null;
  }
}

const WS_FAILURES_BEFORE_SSE = 3;
const PING_INTERVAL_MS = 25000;
const PONG_TIMEOUT_MS = 10000;
const ACK_TIMEOUT_MS = 8000;
const TOKEN_REFRESH_MARGIN_S = 10;
// A connection must stay up this long before the backoff starts again from the bottom:
// a hub that says hello and drops us at once must not get hammered.
const STABLE_AFTER_MS = 30000;
// While "auto" runs on SSE, try a WebSocket again this often (the proxy may be gone).
const WS_RETRY_MS = 180000;
// The hub asked us to slow down (1013 try again, 4429 too many, 4008 too slow).
const SLOW_DOWN_CODES = [1013, 4429, 4008];
const SLOW_DOWN_MIN_MS = 5000;
// Retrying cannot help: the request itself is wrong (or the origin/key is refused).
const FATAL_CODES = { 4403: "forbidden", 4400: "bad-since", 1008: "policy" };

/** The `exp` claim of a JWT (seconds), read without verifying; null if unreadable. */
function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

function randomId() {
  if (globalThis.crypto && crypto.randomUUID) return "c-" + crypto.randomUUID();
  return "c-" + Date.now().toString(36) + Math.random().toString(36).slice(2);
}

/** A live connection to notifyhub plus typed wrappers of its REST API. */
export class NotifyHub {
  /**
   * @param {object} options
   * @param {string} [options.url] hub base URL (default: this page's origin)
   * @param {string} [options.token] a user JWT
   * @param {() => Promise<string>} [options.getToken] called for a first or fresh token
   * @param {"auto"|"ws"|"sse"} [options.transport] default "auto": WebSocket, SSE fallback
   * @param {{base?: number, cap?: number}} [options.backoff] reconnect delays in ms
   */
  constructor(options = {}) {
    const base = options.url || globalThis.location.origin;
    this.url = base.replace(/\/+$/, "");
    this.transport = options.transport || "auto";
    if (!["auto", "ws", "sse"].includes(this.transport)) {
      throw new TypeError("transport must be 'auto', 'ws' or 'sse'");
    }
    this._token = options.token || null;
    this._getToken = options.getToken || null;
    if (!this._token && !this._getToken) throw new TypeError("give token or getToken");
    this._backoffBase = (options.backoff && options.backoff.base) || 500;
    this._backoffCap = (options.backoff && options.backoff.cap) || 15000;

    this._listeners = new Map();
    this.status = "offline"; // connecting | connected | reconnecting | offline
    this.statusReason = null;
    this.userId = null;
    this.unread = null; // the exact unread count (null before the first hello)
    this.unseen = null; // the exact unseen count, likewise
    this.lastSeq = null; // newest seq delivered to listeners
    this._helloSeq = 0; // events up to here are already counted in hello.unread_count
    this.activeTransport = null;

    this._wanted = false;
    this._socket = null; // WebSocket or EventSource
    this._greeted = false; // the current socket has delivered hello
    this._attempt = 0;
    this._wsFailures = 0;
    this._authRetry = true; // one immediate reconnect after a 4401, re-armed by each hello
    this._timer = null;
    this._stableTimer = null;
    this._wsRetryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._pendingAcks = new Map(); // client_id -> {resolve, reject, timer}
    this._onOnline = () => {
      if (this._wanted && this.status !== "connected") this._reconnectNow();
    };
  }

  // ---- events -----------------------------------------------------------------------

  /** Call `fn(data, event)` for each event of `type` ("*" for all; "status", "unread",
   * "unseen"). */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return this;
  }

  /** Stop calling `fn` for `type`. */
  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
    return this;
  }

  _emit(type, data, event) {
    for (const key of [type, "*"]) {
      const set = this._listeners.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try {
          fn(data, event || { type, seq: null, data });
        } catch (err) {
          // A listener's bug must not break delivery to the others.
          setTimeout(() => {
            throw err;
          });
        }
      }
    }
  }

  _setStatus(status, reason = null) {
    if (this.status === status && this.statusReason === reason) return;
    this.status = status;
    this.statusReason = reason;
    this._emit("status", { status, reason, transport: this.activeTransport });
  }

  _setUnread(count) {
    if (typeof count !== "number" || count === this.unread) return;
    this.unread = count;
    this._emit("unread", count);
  }

  _setUnseen(count) {
    if (typeof count !== "number" || count === this.unseen) return;
    this.unseen = count;
    this._emit("unseen", count);
  }

  // Counts from a REST answer: only while not live (live, events set them in commit order).
  _countsFrom(result) {
    if (this._live() || !result) return;
    this._setUnread(result.unread_count);
    this._setUnseen(result.unseen_count);
  }

  // ---- connection -------------------------------------------------------------------

  /** Start (or keep) a live connection; reconnects until `close()`. */
  connect() {
    if (this._wanted) return this;
    this._wanted = true;
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
    return this;
  }

  /** Close the live connection and stop reconnecting. */
  close() {
    this._wanted = false;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._timer);
    this._clearConnectionTimers();
    this._teardown();
    this._failAcks(new Error("closed"));
    this._setStatus("offline", "closed");
  }

  /** The current token, refreshed through getToken when missing or about to expire. */
  async token({ refresh = false } = {}) {
    const exp = this._token ? tokenExpiry(this._token) : null;
    const stale = exp !== null && exp - Date.now() / 1000 < TOKEN_REFRESH_MARGIN_S;
    if (this._getToken && (refresh || !this._token || stale)) {
      this._token = await this._getToken();
    }
    if (!this._token) throw new HubError(401, { detail: "no token" });
    return this._token;
  }

  _nextTransport() {
    if (this.transport !== "auto") return this.transport;
    if (typeof WebSocket === "undefined") return "sse";
    return this._wsFailures >= WS_FAILURES_BEFORE_SSE ? "sse" : "ws";
  }

  async _open() {
    if (!this._wanted) return;
    this._setStatus(this._attempt === 0 && this.lastSeq === null ? "connecting" : "reconnecting");
    let token;
    try {
      token = await this.token();
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    if (!this._wanted) return;
    this._teardown(); // never two live sockets, whatever raced us here
    const kind = this._nextTransport();
    this.activeTransport = kind;
    const params = new URLSearchParams({ token });
    if (this.lastSeq !== null) params.set("since", String(this.lastSeq));
    if (kind === "ws") this._openWebSocket(params);
    else this._openEventSource(params);
  }

  _openWebSocket(params) {
    const wsUrl = this.url.replace(/^http/, "ws") + "/ws?" + params;
    const ws = new WebSocket(wsUrl);
    this._socket = ws;
    ws.onopen = () => this._startPing();
    ws.onmessage = (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch {
        return;
      }
      this._receive(event);
    };
    ws.onclose = (ev) => {
      if (this._socket !== ws) return;
      this._socket = null;
      this._stopPing();
      this._failAcks(new Error("connection closed"));
      this._onClosed(ev.code, ev.reason);
    };
  }

  _openEventSource(params) {
    const es = new EventSource(this.url + "/api/stream?" + params);
    this._socket = es;
    const handler = (type) => (msg) => {
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch {
        return;
      }
      // EventSource keeps the last id across events, so only durable types read it.
      const seq = DURABLE_TYPES.includes(type) ? Number(msg.lastEventId) : null;
      this._receive({ type, seq, data });
    };
    for (const type of [...DURABLE_TYPES, ...EPHEMERAL_TYPES]) {
      es.addEventListener(type, handler(type));
    }
    es.onerror = () => {
      // EventSource would retry on its own with a stale token and no backoff; we
      // take over reconnection so `since`, token refresh and backoff stay ours.
      if (this._socket !== es) return;
      es.close();
      this._socket = null;
      this._onClosed(null);
    };
  }

  async _onClosed(code, reason = "") {
    if (!this._wanted) return;
    const greeted = this._greeted;
    this._greeted = false;
    this._clearConnectionTimers();
    if (code === 4401) {
      // The token expired or was refused: refresh it (each attempt asks getToken again).
      if (!this._getToken) {
        this._setStatus("offline", "unauthorized");
        this._wanted = false;
        return;
      }
      this._token = null;
      if (this._authRetry) {
        // Once per hello, come back at once: an expired token is the common case. A
        // getToken that keeps handing out refused tokens then goes through the backoff.
        this._authRetry = false;
        this._setStatus("reconnecting", "token");
        this._open();
      } else {
        this._scheduleReconnect();
      }
      return;
    }
    if (code in FATAL_CODES) {
      this._setStatus("offline", FATAL_CODES[code]);
      this._wanted = false;
      return;
    }
    // Only a WebSocket closed without a close frame (1006: it never opened, or was cut
    // before hello) can mean a proxy blocks WebSockets; any explicit code came from the
    // hub, so WebSockets work. An SSE stream (code null) that fails before hello is
    // checked too, for a refused token.
    const blocked = code === 1006 || code === null;
    if (!greeted && blocked) await this._diagnose();
    // Someone (the `online` event, connect()) may have opened a socket meanwhile.
    if (this._wanted && !this._socket) this._scheduleReconnect(this._minDelay(code, reason));
  }

  // How long the hub asked us to stay away, in ms (0: the normal backoff).
  _minDelay(code, reason) {
    if (!SLOW_DOWN_CODES.includes(code)) return 0;
    const asked = /retry in (\d+(?:\.\d+)?) ?s/.exec(reason || "");
    return Math.max(SLOW_DOWN_MIN_MS, asked ? Number(asked[1]) * 1000 : 0);
  }

  // A browser hides why a WebSocket or EventSource failed to open. One REST call
  // tells apart "hub down" (network error), "bad token" (401) and "hub up but the
  // live transport blocked" (200), which is what justifies falling back to SSE.
  async _diagnose() {
    try {
      await this._request("GET", "/api/notifications/unread-count", undefined, {
        retryAuth: false,
      });
    } catch (err) {
      if (err instanceof HubError && err.status === 401) {
        if (this._getToken) {
          this._token = null;
        } else {
          this._setStatus("offline", "unauthorized");
          this._wanted = false;
        }
      }
      return;
    }
    if (this.activeTransport === "ws") this._wsFailures += 1;
  }

  _scheduleReconnect(minDelay = 0) {
    if (!this._wanted) return;
    clearTimeout(this._timer);
    this._clearConnectionTimers();
    // Exponential backoff with full jitter: spreads a crowd of clients reconnecting
    // after a restart over the whole window instead of in synchronized waves. When the
    // hub asked for a pause, wait at least that long (jittered up to twice it).
    const ceiling = Math.max(
      minDelay * 2,
      Math.min(this._backoffCap, this._backoffBase * 2 ** this._attempt),
    );
    const floor = Math.min(minDelay, ceiling);
    const delay = floor + Math.random() * (ceiling - floor);
    this._attempt += 1;
    this._setStatus("reconnecting", null);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _reconnectNow() {
    clearTimeout(this._timer);
    this._teardown();
    this._open();
  }

  _clearConnectionTimers() {
    clearTimeout(this._stableTimer);
    clearTimeout(this._wsRetryTimer);
  }

  _teardown() {
    this._stopPing();
    this._clearConnectionTimers();
    this._greeted = false;
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.close();
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      if (!this._send({ type: "ping" })) return;
      clearTimeout(this._pongTimer);
      // No pong in time: the connection is dead without the browser noticing yet.
      this._pongTimer = setTimeout(() => this._pongTimeout(), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  // The browser may take minutes to notice a dead connection (a suspended laptop, a
  // dropped NAT entry) and fire onclose; we do not wait for it.
  _pongTimeout() {
    const ws = this._socket;
    if (!(ws instanceof WebSocket)) return;
    this._socket = null; // detached: its late onclose is ignored
    this._stopPing();
    this._failAcks(new Error("connection lost"));
    try {
      ws.close(4000, "pong timeout");
    } catch {
      // Closing a dead socket may throw in some browsers; it is detached anyway.
    }
    this._onClosed(4000, "pong timeout");
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
  }

  _send(frame) {
    const ws = this._socket;
    if (!(typeof WebSocket !== "undefined" && ws instanceof WebSocket)) return false;
    if (ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // ---- incoming events --------------------------------------------------------------

  _receive(event) {
    const { type, data } = event;
    const seq = typeof event.seq === "number" && !Number.isNaN(event.seq) ? event.seq : null;
    if (type === "hello") return this._hello(data, event);
    if (type === "pong") {
      clearTimeout(this._pongTimer);
      return;
    }
    if (type === "ack") return this._settleAck(data.client_id, data.message, null);
    if (type === "error" && data && data.client_id && this._pendingAcks.has(data.client_id)) {
      return this._settleAck(data.client_id, null, new HubError(422, { detail: data.message }));
    }
    if (type === "resync") return this._resync(data, event);
    if (seq !== null) {
      if (this.lastSeq !== null && seq <= this.lastSeq) return; // seen already
      if (this.lastSeq !== null && seq > this.lastSeq + 1) {
        // A hole: the hub guarantees none, so the stream is broken. Resume from
        // the last seq delivered; the hub replays the missing events.
        this._teardown();
        this._scheduleReconnect();
        return;
      }
      this.lastSeq = seq;
      this._count(type, seq, data);
    }
    this._emit(type, data, { type, seq, data });
  }

  _hello(data, event) {
    this._greeted = true;
    this.userId = data.user_id;
    this._authRetry = true;
    this._clearConnectionTimers();
    this._stableTimer = setTimeout(() => {
      this._attempt = 0;
    }, STABLE_AFTER_MS);
    if (this.activeTransport === "ws") this._wsFailures = 0;
    const fellBack = this.transport === "auto" && this.activeTransport === "sse";
    if (fellBack && typeof WebSocket !== "undefined") {
      // Fell back to SSE: give WebSockets one more chance now and then. One failure
      // (closed before hello while REST works) brings us back to SSE.
      this._wsRetryTimer = setTimeout(() => {
        this._wsFailures = WS_FAILURES_BEFORE_SSE - 1;
        this._reconnectNow();
      }, WS_RETRY_MS);
    }
    const last = typeof data.last_seq === "number" ? data.last_seq : 0;
    if (this.lastSeq === null || last < this.lastSeq) {
      // First connection (or the hub's history went backwards): start from now.
      this.lastSeq = last;
    }
    // Events replayed after this hello (seq <= last) are already in unread_count.
    this._helloSeq = last;
    this._setUnread(data.unread_count);
    this._setUnseen(data.unseen_count);
    this._setStatus("connected");
    this._emit("hello", data, event);
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
    let page = null;
    try {
      page = await this.list({ limit: 20 });
    } catch {
      // Listeners still learn that their state is stale.
    }
    this._emit("resync", { reason: data && data.reason, notifications: page }, event);
  }

  _settleAck(clientId, message, error) {
    const pending = this._pendingAcks.get(clientId);
    if (!pending) return;
    this._pendingAcks.delete(clientId);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(message);
  }

  _failAcks(error) {
    for (const clientId of [...this._pendingAcks.keys()]) {
      this._settleAck(clientId, null, error);
    }
  }

  // ---- REST -------------------------------------------------------------------------

  async _request(method, path, body, { retryAuth = true } = {}) {
    const token = await this.token();
    const init = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.url + path, init);
    if (response.status === 401 && retryAuth && this._getToken) {
      await this.token({ refresh: true });
      return this._request(method, path, body, { retryAuth: false });
    }
    if (response.status === 204) return null;
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
    if (!response.ok) throw new HubError(response.status, json);
    return json;
  }

  _live() {
    return this.status === "connected";
  }

  /**
   * A page of a box ("inbox", "archived", "all"): {items, next_before, unread_count,
   * unseen_count}. `type` and `priority` take one value or an array; `since`/`until`
   * a Date or an RFC 3339 string (created_at from, to); `read` true/false.
   */
  list({
    limit = 20, before = null, box = null, unreadOnly = false, read = null, type = null,
    priority = null, since = null, until = null, q = null,
  } = {}) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (before !== null && before !== undefined) params.set("before", String(before));
    if (box) params.set("box", box);
    if (unreadOnly) params.set("unread_only", "true");
    if (read !== null && read !== undefined) params.set("read", String(read));
    for (const t of [].concat(type || [])) params.append("type", t);
    for (const p of [].concat(priority || [])) params.append("priority", p);
    if (since) params.set("since", since instanceof Date ? since.toISOString() : since);
    if (until) params.set("until", until instanceof Date ? until.toISOString() : until);
    if (q) params.set("q", q);
    return this._request("GET", "/api/notifications?" + params);
  }

  /** Mark notifications read; resolves to {updated, unread_count, unseen_count}. */
  async markRead(ids) {
    const result = await this._request("POST", "/api/notifications/mark-read", { ids });
    // While live, the notifications.read event sets the counts in commit order.
    this._countsFrom(result);
    return result;
  }

  /** Mark every notification (up to `beforeId` if given) read. */
  async markAllRead(beforeId = null) {
    const body = beforeId === null ? {} : { before_id: beforeId };
    const result = await this._request("POST", "/api/notifications/mark-all-read", body);
    this._countsFrom(result);
    return result;
  }

  // {ids} or {beforeId} (a position: every one at or below it) as a request body.
  async _select(path, { ids = null, beforeId = null } = {}) {
    const body = ids ? { ids } : { before_id: beforeId };
    const result = await this._request("POST", "/api/notifications/" + path, body);
    this._countsFrom(result);
    return result;
  }

  /** Mark notifications seen: `{ids}`, or `{beforeId}` (the inbox up to that position). */
  markSeen(selection) {
    return this._select("seen", selection);
  }

  /** Archive notifications: `{ids}`, or `{beforeId}` (the inbox up to that position). */
  archive(selection) {
    return this._select("archive", selection);
  }

  /** Move archived notifications back to the inbox: `{ids}` or `{beforeId}`. */
  unarchive(selection) {
    return this._select("unarchive", selection);
  }

  /** Snooze a notification until `until` (a Date or an RFC 3339 string). */
  async snooze(id, until) {
    const body = { until: until instanceof Date ? until.toISOString() : until };
    const result = await this._request(
      "POST", "/api/notifications/" + encodeURIComponent(id) + "/snooze", body,
    );
    this._countsFrom(result);
    return result;
  }

  /** Delete a notification. */
  delete(id) {
    return this._request("DELETE", "/api/notifications/" + encodeURIComponent(id));
  }

  /** The unread count asked from the hub (also sets `unread` and `unseen` while not live). */
  async unreadCount() {
    return (await this.counts()).count;
  }

  /** `{count, unseen}` asked from the hub (also sets `unread` and `unseen` while not live). */
  async counts() {
    const counts = await this._request("GET", "/api/notifications/unread-count");
    this._countsFrom({ unread_count: counts.count, unseen_count: counts.unseen });
    return counts;
  }

  /** Send a direct message: over the WebSocket with an ack when live, else REST. */
  async sendMessage(recipientId, body, clientId = randomId()) {
    const data = { recipient_id: recipientId, body };
    if (this._send({ type: "message.send", client_id: clientId, data })) {
      try {
        return await new Promise((resolve, reject) => {
          const timer = setTimeout(
            () => this._settleAck(clientId, null, new Error("ack timeout")),
            ACK_TIMEOUT_MS,
          );
          this._pendingAcks.set(clientId, { resolve, reject, timer });
        });
      } catch (err) {
        if (err instanceof HubError) throw err;
        // Lost connection or no ack: the same client_id makes the REST retry idempotent.
      }
    }
    return this._request("POST", "/api/messages/send", { ...data, client_id: clientId });
  }

  /** Conversations, newest first: {items: [{user_id, last_message, unread_count}]}. */
  conversations({ limit = 20 } = {}) {
    return this._request("GET", "/api/messages/conversations?limit=" + limit);
  }

  /** A page of the conversation with `userId`, newest first: {items, next_before}. */
  conversation(userId, { limit = 50, before = null } = {}) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (before !== null && before !== undefined) params.set("before", String(before));
    return this._request(
      "GET",
      "/api/messages/conversation/" + encodeURIComponent(userId) + "?" + params,
    );
  }

  /** Mark messages read: `{ids: [...]}` or `{userId}` (the whole conversation). */
  markMessagesRead({ ids = null, userId = null } = {}) {
    const body = ids ? { ids } : { user_id: userId };
    return this._request("POST", "/api/messages/mark-read", body);
  }

  /** Hide a message for yourself, or remove it for both (`forEveryone`, sender only). */
  deleteMessage(id, { forEveryone = false } = {}) {
    const query = forEveryone ? "?for_everyone=true" : "";
    return this._request("DELETE", "/api/messages/" + encodeURIComponent(id) + query);
  }

  /** The caller's preferences. */
  getPreferences() {
    return this._request("GET", "/api/notifications/preferences");
  }

  /** Replace the caller's preferences; resolves to the stored ones. */
  putPreferences(preferences) {
    return this._request("PUT", "/api/notifications/preferences", preferences);
  }

  /** Change only what `patch` names (merged per channel and per type); resolves to the stored ones. */
  patchPreferences(patch) {
    return this._request("PATCH", "/api/notifications/preferences", patch);
  }

  /** Active announcements: {items}. */
  announcements() {
    return this._request("GET", "/api/announcements");
  }

  /** Tell `userId` you are typing (WebSocket only; returns whether it was sent). */
  typing(userId) {
    return this._send({ type: "typing", data: { to: userId } });
  }
}
