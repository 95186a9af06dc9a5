// The two live transports behind one interface:
//
//   new WebSocketTransport(baseUrl, params, sink) / new SseTransport(baseUrl, params, sink)
//     sink.frame(event)          each frame the hub sends, parsed: {type, seq, data}
//     sink.closed(code, reason)  once, when the transport ends by itself (the code is
//                                null for SSE); never after close()
//   .kind                        "ws" or "sse"
//   .send(frame)                 sends a command frame; false when it cannot (SSE, or
//                                the socket is not open)
//   .close()                     ends it; the sink hears nothing more from it

import { DURABLE_TYPES, EPHEMERAL_TYPES } from "./protocol.js";

const PING_INTERVAL_MS = 25000;
const PONG_TIMEOUT_MS = 10000;
/** The code the client reports when the hub stopped answering pings. */
export const PONG_TIMEOUT_CODE = 4000;

/** A WebSocket to `/ws`, with a ping every 25 s and a 10 s wait for its pong. */
export class WebSocketTransport {
  constructor(baseUrl, params, sink) {
    this.kind = "ws";
    this._sink = sink;
    this._pingTimer = null;
    this._pongTimer = null;
    const ws = new WebSocket(baseUrl.replace(/^http/, "ws") + "/ws?" + params);
    this._ws = ws;
    ws.onopen = () => this._startPing();
    ws.onmessage = (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (event.type === "pong") {
        clearTimeout(this._pongTimer);
        return;
      }
      this._sink.frame(event);
    };
    ws.onclose = (ev) => this._end(ev.code, ev.reason);
  }

  send(frame) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  close() {
    const ws = this._detach();
    if (ws) ws.close();
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    return ws;
  }

  _end(code, reason) {
    if (!this._detach()) return;
    this._sink.closed(code, reason);
  }

  _startPing() {
    this._pingTimer = setInterval(() => {
      if (!this.send({ type: "ping" })) return;
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => this._pongTimeout(), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  // The browser may take minutes to notice a dead connection (a suspended laptop, a
  // dropped NAT entry) and fire onclose; we do not wait for it.
  _pongTimeout() {
    const ws = this._detach();
    if (!ws) return;
    try {
      ws.close(PONG_TIMEOUT_CODE, "pong timeout");
    } catch {
      // Closing a dead socket may throw in some browsers; it is detached anyway.
    }
    this._sink.closed(PONG_TIMEOUT_CODE, "pong timeout");
  }
}

/** An EventSource on `/api/stream`; it cannot send commands. */
export class SseTransport {
  constructor(baseUrl, params, sink) {
    this.kind = "sse";
    this._sink = sink;
    const es = new EventSource(baseUrl + "/api/stream?" + params);
    this._es = es;
    const handler = (type) => (msg) => {
      if (this._es !== es) return;
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch {
        return;
      }
      // EventSource keeps the last id across events, so only durable types read it.
      const seq = DURABLE_TYPES.includes(type) ? Number(msg.lastEventId) : null;
      this._sink.frame({ type, seq, data });
    };
    for (const type of [...DURABLE_TYPES, ...EPHEMERAL_TYPES]) {
      es.addEventListener(type, handler(type));
    }
    es.onerror = () => {
      // EventSource would retry on its own with a stale token and no backoff; we
      // take over reconnection so `since`, token refresh and backoff stay ours.
      if (this._es !== es) return;
      this.close();
      this._sink.closed(null, "");
    };
  }

  send() {
    return false;
  }

  close() {
    const es = this._es;
    this._es = null;
    if (es) es.close();
  }
}

/** The transport class of each `kind`. */
export const TRANSPORTS = { ws: WebSocketTransport, sse: SseTransport };
