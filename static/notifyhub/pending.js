// Requests waiting for an answer (an ack from the hub, a result from the leader tab):
// bounded in number, each settled at most once, by its answer or its timeout.

/** A bounded map from request id to a waiting promise. */
export class Pending {
  /**
   * @param {number} max how many may wait at once; `add` refuses more
   * @param {number} timeoutMs each settles with `onTimeout()`'s value after this long
   */
  constructor(max, timeoutMs) {
    this.max = max;
    this.timeoutMs = timeoutMs;
    this._waiting = new Map(); // id -> {resolve, reject, timer}
  }

  get size() {
    return this._waiting.size;
  }

  has(id) {
    return this._waiting.has(id);
  }

  /** A promise settled by `resolve(id, ...)`/`reject(id, ...)`, or null when full or
   *  `id` already waits. On timeout it resolves to `onTimeout()`. */
  add(id, onTimeout) {
    if (this._waiting.size >= this.max || this._waiting.has(id)) return null;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.resolve(id, onTimeout()), this.timeoutMs);
      this._waiting.set(id, { resolve, reject, timer });
    });
  }

  /** Settle `id` with `value`; false if it was not waiting. */
  resolve(id, value) {
    const entry = this._take(id);
    if (entry) entry.resolve(value);
    return Boolean(entry);
  }

  /** Settle `id` with the error `error`; false if it was not waiting. */
  reject(id, error) {
    const entry = this._take(id);
    if (entry) entry.reject(error);
    return Boolean(entry);
  }

  /** Resolve every waiting request with `value` (the connection they wait on is gone). */
  resolveAll(value) {
    for (const id of [...this._waiting.keys()]) this.resolve(id, value);
  }

  _take(id) {
    const entry = this._waiting.get(id);
    if (!entry) return null;
    this._waiting.delete(id);
    clearTimeout(entry.timer);
    return entry;
  }
}
