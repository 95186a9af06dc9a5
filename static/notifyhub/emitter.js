// A tiny event emitter: listeners by event name, "*" for every event.

/** Calls `fn(data, event)` for each event emitted under its type, or under "*". */
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Call `fn(data, event)` for each event of `type` ("*" for all). */
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

  /** Call the listeners of `type` and of "*" with `data` and the whole `event`. */
  emit(type, data, event) {
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
}
