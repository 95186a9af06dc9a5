// One live connection per browser: the tabs of one user (same hub URL, same `transport`
// option) elect a leader with the Web Locks API; the leader holds the connection and
// relays over a BroadcastChannel. Messages on the channel (`t` is the kind):
//
//   leader  {from}                   a tab took the lock; followers answer `seen`
//   seen    {to, seq}                a follower's last delivered seq (the new leader
//                                    resumes after the highest one)
//   join    {from, since}            a follower wants the state from its position
//   welcome {to, hello, events, ...} the leader's state: `hello` as of its last seq, the
//                                    events after `since` (null: not kept: resync)
//   frame   {event}                  every frame of the hub, relayed as it came
//   status  {status}                 the leader's connection status
//   tabs    {count}                  how many tabs share the connection
//   cmd     {from, id, frame}        a follower's command (message.send, mark read)
//   result  {to, id, result}         its outcome: {data} | {error} | {fallback: true}
//   typing  {frame}                  a follower's typing frame
//   bye     {from}                   a follower closed

import { Pending } from "./pending.js";
import { randomId } from "./protocol.js";

// Durable events each tab keeps, so a leader can serve a follower that (re)joins.
const RECENT_MAX = 500;
// A new leader waits this long at most for the followers' positions.
const TAKEOVER_WAIT_MS = 300;
// The leader recounts the tabs this often (a closed tab leaves the lock queue silently).
const TABS_REFRESH_MS = 2000;
// A follower's command with no result by then goes over REST (the ack timeout is 8 s).
const REQUEST_TIMEOUT_MS = 10000;
const MAX_REQUESTS = 64;
const MAX_JOINERS = 256;

/** Whether this browser can share a connection (Web Locks and BroadcastChannel). */
export function sharingSupported() {
  const locks = globalThis.navigator && navigator.locks;
  return Boolean(locks && typeof locks.request === "function")
    && typeof globalThis.BroadcastChannel === "function";
}

/** The lock and channel name of the tabs that may share: one hub, transport and user. */
export function shareKey(url, transport, userId) {
  return "notifyhub:" + JSON.stringify([url, transport, userId]);
}

/**
 * This tab's part in a shared connection: leader (its `hub` holds the connection and
 * serves the others) or follower (its `hub` is fed from the channel).
 *
 * The hub provides: `_lead(since)`, `_receive(event)`, `_welcome(message)`,
 * `_mirror(status)`, `_shared()`, `_sendCommand(frame)`, `_sendFrame(frame)`,
 * and its `lastSeq`, `unread`, `userId`, `status`, `statusReason`, `activeTransport`.
 */
export class Share {
  constructor(hub, key) {
    this.hub = hub;
    this.key = key;
    this.id = randomId("t-");
    this.role = null; // "leader" | "follower"
    this.tabs = 1;
    this.joined = false; // a follower that has the leader's state (a welcome)
    this.leaderStatus = null; // a follower's copy of the leader's connection status
    this._stopped = false;
    this._channel = null;
    this._abort = new AbortController();
    this._release = null; // ends the leader's hold on the lock
    this._tabsTimer = null;
    this._joiners = new Map(); // tab id -> since: joins not yet welcomed
    this._requests = new Pending(MAX_REQUESTS, REQUEST_TIMEOUT_MS);
    this._recent = []; // durable events delivered here: contiguous seqs, oldest first
    this._leaderId = null; // a follower's current leader
    this._reported = null; // while taking over: the seqs followers reported
    this._positionsChanged = null;
  }

  /** Take the lock if it is free (leader), else follow and queue for it. */
  start() {
    this._channel = new BroadcastChannel(this.key);
    this._channel.onmessage = (msg) => this._message(msg.data || {});
    navigator.locks
      .request(this.key, { ifAvailable: true }, (lock) => {
        if (lock) return this._lead();
        this._follow();
        // Held by another tab: wait in line; the callback runs when this tab is next.
        navigator.locks
          .request(this.key, { signal: this._abort.signal }, () => this._lead())
          .catch(() => {}); // aborted by stop() while waiting
        return undefined;
      })
      .catch(() => {});
  }

  /** Leave: a follower leaves the queue, a leader releases the lock (after its hub
   *  closed the connection, so two sockets never overlap). */
  stop() {
    if (this._stopped) return;
    this._stopped = true;
    if (this.role === "follower") this._post({ t: "bye", from: this.id });
    this._abort.abort();
    clearInterval(this._tabsTimer);
    this._requests.resolveAll({ fallback: true });
    if (this._release) this._release();
    this._channel.close();
  }

  // ---- leader -------------------------------------------------------------------------

  async _lead() {
    if (this._stopped) return;
    const held = new Promise((resolve) => {
      this._release = resolve;
    });
    this.role = "leader";
    this.joined = true;
    this.hub._shared(); // until our connection is up, commands go over REST
    // Commands sent to the old leader may never be answered: they go over REST.
    this._requests.resolveAll({ fallback: true });
    this._reported = [];
    this._post({ t: "leader", from: this.id });
    await this._gatherPositions();
    const reported = this._reported;
    this._reported = null;
    if (this._stopped) return;
    // Every tab gets every relayed event (a BroadcastChannel loses nothing between open
    // tabs), so the furthest position any tab reached is where the stream continues.
    const seen = [this.hub.lastSeq, ...reported].filter((s) => typeof s === "number");
    this.hub._lead(seen.length ? Math.max(...seen) : null);
    this._countTabs();
    this._tabsTimer = setInterval(() => this._countTabs(), TABS_REFRESH_MS);
    await held;
  }

  async _gatherPositions() {
    let expected = 0;
    try {
      const { pending } = await navigator.locks.query();
      expected = pending.filter((lock) => lock.name === this.key).length;
    } catch {
      return;
    }
    if (expected === 0 || this._stopped) return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, TAKEOVER_WAIT_MS);
      this._positionsChanged = () => {
        if (this._reported.length < expected) return;
        clearTimeout(timer);
        resolve();
      };
    });
    this._positionsChanged = null;
  }

  async _countTabs() {
    if (this.role !== "leader" || this._stopped) return;
    let count = 1;
    try {
      const { pending } = await navigator.locks.query();
      count += pending.filter((lock) => lock.name === this.key).length;
    } catch {
      return;
    }
    if (count === this.tabs || this._stopped) return;
    this.tabs = count;
    this._post({ t: "tabs", count });
    this.hub._shared();
  }

  /** Leader: pass a frame of the hub to the followers, as it came. Answers to this
   *  tab's commands (a `client_id`) stay here. */
  relay(event) {
    if (this.role !== "leader") return;
    if (event.data && typeof event.data === "object" && "client_id" in event.data) return;
    this._post({ t: "frame", event });
  }

  /** Leader: the connection's status changed. */
  statusChanged() {
    if (this.role !== "leader") return;
    this._post({ t: "status", status: this._status() });
  }

  /** Leader: welcome the followers waiting for the state, once the hub greeted us and
   *  we have reached their position. */
  serveJoiners() {
    const hub = this.hub;
    if (this.role !== "leader" || hub.status !== "connected" || hub.unread === null) return;
    for (const [tab, since] of [...this._joiners]) {
      if (since !== null && since > hub.lastSeq) continue; // we are behind them: wait
      this._joiners.delete(tab);
      this._post({
        t: "welcome",
        to: tab,
        hello: {
          user_id: hub.userId, last_seq: hub.lastSeq, unread_count: hub.unread,
          unseen_count: hub.unseen,
        },
        events: since === null ? [] : this._after(since),
        status: this._status(),
        tabs: this.tabs,
      });
    }
  }

  _status() {
    const hub = this.hub;
    return { status: hub.status, reason: hub.statusReason, transport: hub.activeTransport };
  }

  // The kept events after `since`, or null when some of them are no longer kept.
  _after(since) {
    const last = this.hub.lastSeq;
    if (since === last) return [];
    const first = this._recent.length ? this._recent[0].seq : null;
    if (first === null || since + 1 < first) return null;
    return this._recent.slice(since + 1 - first);
  }

  // ---- every tab ----------------------------------------------------------------------

  /** An event this tab delivered; kept for followers that join later. */
  remember(event) {
    const recent = this._recent;
    if (recent.length && recent[recent.length - 1].seq + 1 !== event.seq) recent.length = 0;
    recent.push(event);
    if (recent.length > RECENT_MAX) recent.shift();
  }

  /** The position went back or jumped (resync, a reset hub): what is kept is void. */
  forget() {
    this._recent.length = 0;
  }

  // ---- follower -----------------------------------------------------------------------

  _follow() {
    if (this._stopped) return;
    this.role = "follower";
    this.hub._shared();
    this.rejoin();
  }

  /** Follower: (again) ask the leader for its state from our position; frames are
   *  dropped until the welcome, which brings the ones after our position. */
  rejoin() {
    this.joined = false;
    this._showStatus();
    this._post({ t: "join", from: this.id, since: this.hub.lastSeq });
  }

  /** Follower: send a command through the leader; resolves to its `result`. */
  request(frame) {
    const id = randomId("q-");
    const waiting = this._requests.add(id, () => ({ fallback: true }));
    if (!waiting) return Promise.resolve({ fallback: true });
    this._post({ t: "cmd", from: this.id, id, frame });
    return waiting;
  }

  /** Follower: send a typing frame through the leader; false when it has no WebSocket. */
  typing(frame) {
    const leader = this.leaderStatus;
    if (!leader || leader.status !== "connected" || leader.transport !== "ws") return false;
    this._post({ t: "typing", frame });
    return true;
  }

  _showStatus() {
    const leader = this.leaderStatus;
    if (this.joined || (leader && leader.status === "offline")) {
      if (leader) this.hub._mirror(leader);
    } else {
      const waiting = this.hub.lastSeq === null ? "connecting" : "reconnecting";
      this.hub._mirror({ status: waiting, reason: null, transport: leader && leader.transport });
    }
  }

  // ---- the channel --------------------------------------------------------------------

  _post(message) {
    if (!this._stopped || message.t === "bye") this._channel.postMessage(message);
  }

  _message(m) {
    if (this._stopped) return;
    switch (m.t) {
      case "join":
        if (this._joiners.size < MAX_JOINERS || this._joiners.has(m.from)) {
          this._joiners.set(m.from, m.since);
        }
        this.serveJoiners();
        this._countTabs();
        return;
      case "bye":
        this._joiners.delete(m.from);
        this._countTabs();
        return;
      case "leader":
        this._leaderId = m.from;
        this._leaderChanged();
        return;
      case "seen":
        if (m.to === this.id && this._reported) {
          this._reported.push(m.seq);
          if (this._positionsChanged) this._positionsChanged();
        }
        return;
      case "cmd":
        if (this.role === "leader") this._command(m);
        return;
      case "typing":
        if (this.role === "leader") this.hub._sendFrame(m.frame);
        return;
      case "frame":
        // A new leader still takes what the old one posted before it went away.
        if (this.joined) this.hub._receive(m.event);
        return;
      default:
        if (this.role === "follower") this._followerMessage(m);
    }
  }

  _leaderChanged() {
    if (this.role !== "follower") return;
    // The old leader is gone: what it did not answer goes over REST.
    this._requests.resolveAll({ fallback: true });
    this._post({ t: "seen", to: this._leaderId, seq: this.hub.lastSeq });
    if (!this.joined) this._post({ t: "join", from: this.id, since: this.hub.lastSeq });
  }

  _followerMessage(m) {
    switch (m.t) {
      case "welcome":
        this._joiners.delete(m.to);
        if (m.to !== this.id || this.joined) return;
        this.joined = true;
        this.leaderStatus = m.status;
        this.tabs = m.tabs;
        this.hub._shared();
        this._showStatus();
        this.hub._welcome(m);
        return;
      case "status":
        this.leaderStatus = m.status;
        this._showStatus();
        return;
      case "tabs":
        this.tabs = m.count;
        this.hub._shared();
        return;
      case "result":
        if (m.to === this.id) this._requests.resolve(m.id, m.result);
        return;
      default:
    }
  }

  async _command({ from, id, frame }) {
    let result;
    try {
      const data = await this.hub._sendCommand(frame);
      result = data === null ? { fallback: true } : { data };
    } catch (err) {
      result = { error: { status: err.status || 500, problem: err.problem || null } };
    }
    this._post({ t: "result", to: from, id, result });
  }
}
