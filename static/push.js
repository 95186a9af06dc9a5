// The "Enable browser notifications" switch (docs/delivery.md, "Web push"): registers the
// service worker /sw.js, subscribes this browser with the hub's VAPID key and stores the
// subscription (POST /api/push/subscriptions); switched off, it deletes it and
// unsubscribes. Pushes then reach the browser while no tab of the page is open.

import { $ } from "./dom.js";

/** The VAPID public key (base64url) as the bytes `applicationServerKey` takes. */
function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function sameKey(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  return x.length === b.length && x.every((v, i) => v === b[i]);
}

/** The switch and its status line; `hub` is the page's NotifyHub (for its token). */
export class PushSwitch {
  constructor(hub) {
    this.hub = hub;
    this.box = $("push-enabled");
    this.supported = "serviceWorker" in navigator && "PushManager" in window;
    $("push-row").hidden = false;
    if (!this.supported) {
      this.box.disabled = true;
      this.status("This browser cannot receive push notifications.");
      return;
    }
    this.box.addEventListener("change", () => (this.box.checked ? this.enable() : this.disable()));
  }

  /** Show whether this browser is subscribed (it may have been, on an earlier visit). */
  async load() {
    if (!this.supported) return;
    try {
      this.box.checked = Boolean(await this.current());
    } catch {
      this.box.checked = false;
    }
  }

  async current() {
    const registration = await navigator.serviceWorker.getRegistration("/");
    return registration ? registration.pushManager.getSubscription() : null;
  }

  async api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + (await this.hub.token()) } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 404 && path.endsWith("vapid-public-key")) {
      throw new Error("web push is not configured on this hub");
    }
    if (!response.ok) throw new Error("the hub answered " + response.status);
    return response.status === 204 ? null : response.json();
  }

  async enable() {
    this.box.disabled = true;
    this.status("Turning on…");
    try {
      const key = keyBytes((await this.api("GET", "/api/push/vapid-public-key")).public_key);
      if ((await Notification.requestPermission()) !== "granted") {
        throw new Error("notifications are blocked for this site in the browser's settings");
      }
      const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
      await navigator.serviceWorker.ready;
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe(); // made for another hub key
        subscription = null;
      }
      subscription ??= await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: key,
      });
      await this.api("POST", "/api/push/subscriptions", subscription.toJSON());
      this.box.checked = true;
      this.status("On: this browser shows notifications even with the page closed.");
    } catch (err) {
      this.box.checked = false;
      this.status("Could not turn on: " + err.message);
    } finally {
      this.box.disabled = false;
    }
  }

  async disable() {
    this.box.disabled = true;
    try {
      const subscription = await this.current();
      if (subscription) {
        await this.api("DELETE", "/api/push/subscriptions", { endpoint: subscription.endpoint });
        await subscription.unsubscribe();
      }
      this.status("Off.");
    } catch (err) {
      this.box.checked = true;
      this.status("Could not turn off: " + err.message);
    } finally {
      this.box.disabled = false;
    }
  }

  status(text) {
    $("push-status").textContent = text;
  }
}
