// The live protocol as data: event types, what the client does on each close code, the
// HTTP status of each error code, and the error every failure is reported as.
// tests/ui/test_protocol_tables.py checks these tables against the hub's own lists
// (hub/connection.py Close, api/errors.py ANSWERS, api/ws.py), so they cannot drift.

/** Event types that are durable user events (they carry a seq). */
export const DURABLE_TYPES = [
  "notification.created",
  "notifications.read",
  "notification.deleted",
  "notification.updated",
  "notification.seen",
  "notification.archived",
  "notification.unarchived",
  "notification.snoozed",
  "notification.unsnoozed",
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

/**
 * What the client does when a live connection closes with each code.
 *
 * - `from`: who sends the code: `"hub"` (the hub, or uvicorn under it: 1012),
 *   `"browser"` (1006: no close frame) or `"client"` (4000: our own pong timeout).
 * - `reconnect`: false stops for good; the status turns `offline` with `reason`.
 * - `backoff`: `"normal"` (exponential, full jitter), `"slow"` (at least 5 s, or the
 *   `retry in N s` of the close reason when larger), `"token"` (a fresh token, at once
 *   the first time after a `hello`, else the normal backoff).
 * - `reauth`: ask `getToken` for a fresh token first.
 * - `suspect`: before `hello`, a proxy may be blocking WebSockets (the SSE fallback).
 */
export const CLOSE_POLICY = Object.freeze({
  1000: { from: "hub", reconnect: true, backoff: "normal" }, // the hub saw us leave
  1001: { from: "hub", reconnect: true, backoff: "normal" }, // the instance is draining
  1006: { from: "browser", reconnect: true, backoff: "normal", suspect: true },
  1008: { from: "hub", reconnect: false, reason: "policy" }, // we flooded: our bug
  1009: { from: "hub", reconnect: true, backoff: "normal" }, // a frame over 64 KiB
  1011: { from: "hub", reconnect: true, backoff: "normal" }, // internal error
  1012: { from: "hub", reconnect: true, backoff: "normal" }, // uvicorn restarted
  1013: { from: "hub", reconnect: true, backoff: "slow" }, // the database failed
  4000: { from: "client", reconnect: true, backoff: "normal" }, // no pong in time
  4008: { from: "hub", reconnect: true, backoff: "slow" }, // we read too slowly
  4400: { from: "hub", reconnect: false, reason: "bad-since" },
  4401: { from: "hub", reconnect: true, backoff: "token", reauth: true },
  4403: { from: "hub", reconnect: false, reason: "forbidden" },
  4429: { from: "hub", reconnect: true, backoff: "slow" }, // too many attempts/connections
});

/** An SSE stream that ended (no close code): maybe a refused token, maybe a proxy. */
export const STREAM_ENDED = Object.freeze({
  from: "hub", reconnect: true, backoff: "normal", suspect: true,
});
/** A close code the table does not name. */
export const OTHER_CLOSE = Object.freeze({ from: "hub", reconnect: true, backoff: "normal" });

/** The policy for a close `code` (null: an SSE stream ended). */
export function closePolicy(code) {
  if (code === null || code === undefined) return STREAM_ENDED;
  return CLOSE_POLICY[code] || OTHER_CLOSE;
}

/**
 * The HTTP status of each `code` of a WebSocket `error` frame: the REST twin of the
 * same error (docs/api.md#errors). The first three exist only on the WebSocket.
 */
export const ERROR_STATUS = Object.freeze({
  invalid_json: 400,
  invalid_frame: 400,
  unknown_type: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  unsupported_media_type: 415,
  invalid_input: 422,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
});

/** A problem's `type` is this followed by its code. */
export const PROBLEM_TYPE = "urn:notifyhub:problem:";

/** An error answered by the hub: a REST problem (RFC 9457) or a WebSocket error frame. */
export class HubError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.name = "HubError";
    this.status = status;
    this.problem = problem || null;
    const type = problem && typeof problem.type === "string" ? problem.type : "";
    /** The hub's error code (`invalid_input`, `unavailable`, ...), or null. */
    this.code = type.startsWith(PROBLEM_TYPE) ? type.slice(PROBLEM_TYPE.length) : null;
  }

  /** The error of a WebSocket `error` frame's data, with its code kept. */
  static fromFrame(data) {
    const code = (data && data.code) || "internal";
    const status = ERROR_STATUS[code] || 400;
    const problem = { type: PROBLEM_TYPE + code, status, detail: data && data.message };
    for (const key of ["errors", "retry_after"]) {
      if (data && data[key] !== undefined) problem[key] = data[key];
    }
    return new HubError(status, problem);
  }
}

/** The claims of a JWT, read without verifying (the hub verifies); null if unreadable. */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** A fresh id for a command (`client_id`) or a request between tabs. */
export function randomId(prefix = "c-") {
  if (globalThis.crypto && crypto.randomUUID) return prefix + crypto.randomUUID();
  return prefix + Date.now().toString(36) + Math.random().toString(36).slice(2);
}
