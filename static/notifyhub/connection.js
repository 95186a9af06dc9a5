// One live connection kept open: picks the transport, reconnects with backoff as the
// close-code table says, and moves through explicit states. It knows nothing of seqs
// or events; its host gives the resume position and takes every frame.

import { closePolicy, HubError } from "./protocol.js";
import { TRANSPORTS } from "./transports.js";

/** The states of a connection; `status` of NotifyHub shows them. */
export const State = Object.freeze({
  OFFLINE: "offline",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
});

/** Every allowed move; anything else is a bug in this file and throws. */
export const TRANSITIONS = Object.freeze({
  offline: ["connecting", "reconnecting"], // connect() (reconnecting: it has a position)
  connecting: ["connected", "reconnecting", "offline"], // hello / closed / fatal or close()
  connected: ["reconnecting", "offline"], // closed or a broken stream / fatal or close()
  reconnecting: ["connected", "offline"], // hello / fatal or close()
});

const WS_FAILURES_BEFORE_SSE = 3;
// A connection must stay up this long before the backoff starts again from the bottom:
// a hub that says hello and drops us at once must not get hammered.
const STABLE_AFTER_MS = 30000;
// While "auto" runs on SSE, try a WebSocket again this often (the proxy may be gone).
const WS_RETRY_MS = 180000;
const SLOW_DOWN_MIN_MS = 5000;

/**
 * The delay before reconnect attempt `attempt` (0, 1, ...): exponential backoff with
 * full jitter, random(0, min(cap, base * 2^attempt)), which spreads a crowd of clients
 * coming back after a restart over the whole window instead of synchronized waves.
 * When the hub asked for a pause (`minDelay`), at least that, jittered up to twice it.
 */
export function backoffDelay(attempt, { base, cap }, minDelay = 0, random = Math.random) {
  const ceiling = Math.max(minDelay * 2, Math.min(cap, base * 2 ** attempt));
  const floor = Math.min(minDelay, ceiling);
  return floor + random() * (ceiling - floor);
}

/** How long a "slow" close asks us to stay away, in ms: its `retry in N s`, at least 5 s. */
export function slowDownMs(reason) {
  const asked = /retry in (\d+(?:\.\d+)?) ?s/.exec(reason || "");
  return Math.max(SLOW_DOWN_MIN_MS, asked ? Number(asked[1]) * 1000 : 0);
}

/**
 * A live connection to the hub that reconnects until `stop()`.
 *
 * host: `since()` the seq to resume after (null: from now); `frame(event)` each frame;
 * `changed(state, reason, kind)` each transition; `lost()` the socket is gone (what
 * waited on it will get no answer).
 */
export class Connection {
  constructor({ url, transport, backoff, tokens, rest, host }) {
    this.url = url;
    this.transport = transport; // "auto" | "ws" | "sse"
    this.backoff = backoff;
    this.tokens = tokens;
    this.rest = rest;
    this.host = host;
    this.state = State.OFFLINE;
    this.reason = null;
    this.kind = null; // the transport of the current (or last) attempt
    this._wanted = false;
    this._transport = null;
    this._greeted = false; // the current transport has delivered hello
    this._attempt = 0;
    this._wsFailures = 0;
    this._authRetry = true; // one immediate reconnect after a 4401, re-armed by each hello
    this._timer = null;
    this._stableTimer = null;
    this._wsRetryTimer = null;
    this._onOnline = () => {
      if (this._wanted && this.state !== State.CONNECTED) this._reconnectNow();
    };
  }

  /** Open the connection and keep it open until `stop()`. */
  start() {
    if (this._wanted) return;
    this._wanted = true;
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
  }

  /** Close it and stop reconnecting; the state becomes offline with `reason`. */
  stop(reason = "closed") {
    this._wanted = false;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._timer);
    this._teardown();
    this._to(State.OFFLINE, reason);
  }

  /** The stream broke (a skipped seq): drop this socket and resume from `since()`. */
  restart() {
    if (!this._wanted) return;
    this._teardown();
    this._scheduleReconnect();
  }

  /** Send a command frame; false unless a WebSocket is open. */
  send(frame) {
    return this._transport ? this._transport.send(frame) : false;
  }

  /** Whether commands can go over this connection now (a greeted WebSocket). */
  get canSend() {
    return this.state === State.CONNECTED && this.kind === "ws";
  }

  _to(state, reason = null) {
    if (state === this.state && reason === this.reason) return;
    if (state !== this.state && !TRANSITIONS[this.state].includes(state)) {
      throw new Error(`notifyhub: no transition from ${this.state} to ${state}`);
    }
    this.state = state;
    this.reason = reason;
    this.host.changed(state, reason, this.kind);
  }

  _nextKind() {
    if (this.transport !== "auto") return this.transport;
    if (typeof WebSocket === "undefined") return "sse";
    return this._wsFailures >= WS_FAILURES_BEFORE_SSE ? "sse" : "ws";
  }

  async _open() {
    if (!this._wanted) return;
    if (this.state === State.OFFLINE) {
      this._to(this.host.since() === null ? State.CONNECTING : State.RECONNECTING);
    } else if (this.state === State.CONNECTED) {
      this._to(State.RECONNECTING);
    }
    let token;
    try {
      token = await this.tokens.get();
    } catch {
      this._scheduleReconnect();
      return;
    }
    if (!this._wanted) return;
    this._teardown(); // never two live sockets, whatever raced us here
    this.kind = this._nextKind();
    const params = new URLSearchParams({ token });
    const since = this.host.since();
    if (since !== null) params.set("since", String(since));
    const transport = new TRANSPORTS[this.kind](this.url, params, {
      frame: (event) => {
        if (this._transport === transport) this._frame(event);
      },
      closed: (code, reason) => {
        if (this._transport !== transport) return;
        this._transport = null;
        this.host.lost();
        this._onClosed(code, reason);
      },
    });
    this._transport = transport;
  }

  _frame(event) {
    if (event.type === "hello") this._hello();
    this.host.frame(event);
  }

  _hello() {
    this._greeted = true;
    this._authRetry = true;
    this._clearConnectionTimers();
    this._stableTimer = setTimeout(() => {
      this._attempt = 0;
    }, STABLE_AFTER_MS);
    if (this.kind === "ws") this._wsFailures = 0;
    const fellBack = this.transport === "auto" && this.kind === "sse";
    if (fellBack && typeof WebSocket !== "undefined") {
      // Fell back to SSE: give WebSockets one more chance now and then. One failure
      // (closed before hello while REST works) brings us back to SSE.
      this._wsRetryTimer = setTimeout(() => {
        this._wsFailures = WS_FAILURES_BEFORE_SSE - 1;
        this._reconnectNow();
      }, WS_RETRY_MS);
    }
    this._to(State.CONNECTED);
  }

  async _onClosed(code, reason = "") {
    if (!this._wanted) return;
    const greeted = this._greeted;
    this._greeted = false;
    this._clearConnectionTimers();
    const policy = closePolicy(code);
    if (policy.reauth) {
      // The token expired or was refused: refresh it (each attempt asks getToken again).
      if (!this.tokens.refreshable) return this._halt("unauthorized");
      this.tokens.forget();
      if (this._authRetry) {
        // Once per hello, come back at once: an expired token is the common case. A
        // getToken that keeps handing out refused tokens then goes through the backoff.
        this._authRetry = false;
        this._to(State.RECONNECTING, "token");
        this._open();
      } else {
        this._scheduleReconnect();
      }
      return;
    }
    if (!policy.reconnect) return this._halt(policy.reason);
    // Only a WebSocket closed without a close frame (1006: it never opened, or was cut
    // before hello) can mean a proxy blocks WebSockets; any explicit code came from the
    // hub, so WebSockets work. An SSE stream that fails before hello is checked too,
    // for a refused token.
    if (!greeted && policy.suspect) await this._diagnose();
    // Someone (the `online` event) may have opened a socket meanwhile.
    if (this._wanted && !this._transport) {
      this._scheduleReconnect(policy.backoff === "slow" ? slowDownMs(reason) : 0);
    }
  }

  _halt(reason) {
    this._wanted = false;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._timer);
    this._teardown();
    this._to(State.OFFLINE, reason);
  }

  // A browser hides why a WebSocket or EventSource failed to open. One REST call
  // tells apart "hub down" (network error), "bad token" (401) and "hub up but the
  // live transport blocked" (200), which is what justifies falling back to SSE.
  async _diagnose() {
    try {
      await this.rest.unreadCount({ retryAuth: false });
    } catch (err) {
      if (err instanceof HubError && err.status === 401) {
        if (this.tokens.refreshable) this.tokens.forget();
        else this._halt("unauthorized");
      }
      return;
    }
    if (this.kind === "ws") this._wsFailures += 1;
  }

  _scheduleReconnect(minDelay = 0) {
    if (!this._wanted) return;
    clearTimeout(this._timer);
    this._clearConnectionTimers();
    const delay = backoffDelay(this._attempt, this.backoff, minDelay);
    this._attempt += 1;
    this._to(State.RECONNECTING);
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
    this._clearConnectionTimers();
    this._greeted = false;
    const transport = this._transport;
    this._transport = null;
    if (transport) {
      transport.close();
      this.host.lost();
    }
  }
}
