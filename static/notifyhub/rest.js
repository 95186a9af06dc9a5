// The hub's REST API: the token that signs each request, and one method per route.

import { HubError, tokenClaims } from "./protocol.js";

// Refresh a token this long before its `exp`.
const TOKEN_REFRESH_MARGIN_S = 10;

/** The user's token: the given one until it is about to expire, then `getToken()`'s. */
export class TokenSource {
  constructor({ token = null, getToken = null } = {}) {
    if (!token && !getToken) throw new TypeError("give token or getToken");
    this._token = token;
    this._getToken = getToken;
  }

  /** Whether a fresh token can be asked for. */
  get refreshable() {
    return Boolean(this._getToken);
  }

  /** The current token, fetched through getToken when missing or about to expire. */
  async get({ refresh = false } = {}) {
    const claims = this._token ? tokenClaims(this._token) : null;
    const exp = claims && typeof claims.exp === "number" ? claims.exp : null;
    const stale = exp !== null && exp - Date.now() / 1000 < TOKEN_REFRESH_MARGIN_S;
    if (this._getToken && (refresh || !this._token || stale)) {
      this._token = await this._getToken();
    }
    if (!this._token) throw new HubError(401, { detail: "no token" });
    return this._token;
  }

  /** Forget the token (it was refused): the next `get` asks getToken. */
  forget() {
    this._token = null;
  }
}

/** Typed wrappers of the REST API; each resolves to the parsed body (null for 204). */
export class RestApi {
  constructor(url, tokens) {
    this.url = url;
    this.tokens = tokens;
  }

  /** One request; a 401 retries once with a fresh token when one can be had. */
  async request(method, path, body, { retryAuth = true } = {}) {
    const token = await this.tokens.get();
    const init = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.url + path, init);
    if (response.status === 401 && retryAuth && this.tokens.refreshable) {
      await this.tokens.get({ refresh: true });
      return this.request(method, path, body, { retryAuth: false });
    }
    if (response.status === 204) return null;
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
    if (!response.ok) throw new HubError(response.status, json);
    return json;
  }

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
    return this.request("GET", "/api/notifications?" + params);
  }

  // POST /api/notifications/<path> ("seen", "archive", "unarchive") with {ids} or
  // {beforeId} (a position: every one at or below it).
  select(path, { ids = null, beforeId = null } = {}) {
    const body = ids ? { ids } : { before_id: beforeId };
    return this.request("POST", "/api/notifications/" + path, body);
  }

  snooze(id, until) {
    const body = { until: until instanceof Date ? until.toISOString() : until };
    return this.request("POST", "/api/notifications/" + encodeURIComponent(id) + "/snooze", body);
  }

  markRead(ids) {
    return this.request("POST", "/api/notifications/mark-read", { ids });
  }

  markAllRead(beforeId = null) {
    const body = beforeId === null ? {} : { before_id: beforeId };
    return this.request("POST", "/api/notifications/mark-all-read", body);
  }

  delete(id) {
    return this.request("DELETE", "/api/notifications/" + encodeURIComponent(id));
  }

  unreadCount(options) {
    return this.request("GET", "/api/notifications/unread-count", undefined, options);
  }

  sendMessage(body) {
    return this.request("POST", "/api/messages/send", body);
  }

  conversations({ limit = 20 } = {}) {
    return this.request("GET", "/api/messages/conversations?limit=" + limit);
  }

  conversation(userId, { limit = 50, before = null } = {}) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (before !== null && before !== undefined) params.set("before", String(before));
    const path = "/api/messages/conversation/" + encodeURIComponent(userId);
    return this.request("GET", path + "?" + params);
  }

  markMessagesRead({ ids = null, userId = null } = {}) {
    const body = ids ? { ids } : { user_id: userId };
    return this.request("POST", "/api/messages/mark-read", body);
  }

  deleteMessage(id, { forEveryone = false } = {}) {
    const query = forEveryone ? "?for_everyone=true" : "";
    return this.request("DELETE", "/api/messages/" + encodeURIComponent(id) + query);
  }

  act(id, actionId) {
    const path = "/api/notifications/" + encodeURIComponent(id) + "/actions/" +
      encodeURIComponent(actionId);
    return this.request("POST", path);
  }

  presence(userIds) {
    const params = new URLSearchParams();
    // Ids holding a comma go one by one as user_id; the rest as one user_ids list.
    const plain = userIds.filter((id) => !id.includes(","));
    if (plain.length) params.set("user_ids", plain.join(","));
    for (const id of userIds) if (id.includes(",")) params.append("user_id", id);
    return this.request("GET", "/api/presence?" + params);
  }

  getPreferences() {
    return this.request("GET", "/api/notifications/preferences");
  }

  putPreferences(preferences) {
    return this.request("PUT", "/api/notifications/preferences", preferences);
  }

  patchPreferences(patch) {
    return this.request("PATCH", "/api/notifications/preferences", patch);
  }

  announcements() {
    return this.request("GET", "/api/announcements");
  }
}
