// notifyhub's service worker (docs/delivery.md, "Web push"), served at /sw.js so its
// scope is the whole site. A push from the hub carries the notification as JSON
// ({id, type, title, body, link, priority}); the worker shows it, tagged with the
// notification's topic ("n<id>") so a newer push about it replaces the one shown, and a
// click opens (or focuses) the notification's link. A dismissal ({type: "dismiss", id},
// sent when the notification is read on any device) closes the one shown with that tag
// and shows nothing (docs/delivery.md, "Cross-device dismissal").

"use strict";

/** The notification shown for a push's JSON `data` (a plain text push is its body). */
function notificationOf(data) {
  const id = data && data.id;
  return {
    title: (data && data.title) || "notifyhub",
    options: {
      body: (data && data.body) || "",
      tag: id ? "n" + id : undefined,
      data: { id: id || null, link: (data && data.link) || "/" },
      requireInteraction: Boolean(data && data.priority === "high"),
    },
  };
}

function readPush(event) {
  if (!event.data) return null;
  try {
    return event.data.json();
  } catch {
    return { body: event.data.text() };
  }
}

/** Whether a push is a cross-device dismissal: {"type": "dismiss", "id"}, no title. */
function isDismissal(data) {
  return Boolean(data && data.type === "dismiss" && data.id && !("title" in data));
}

/** Close the notifications shown for notification `id` (read on another device). */
async function dismiss(id) {
  const shown = await self.registration.getNotifications({ tag: "n" + id });
  for (const notification of shown) notification.close();
}

self.addEventListener("push", (event) => {
  const data = readPush(event);
  if (isDismissal(data)) {
    event.waitUntil(dismiss(data.id));
    return;
  }
  const { title, options } = notificationOf(data);
  event.waitUntil(self.registration.showNotification(title, options));
});

/** The absolute URL to open for a notification's link: same-site paths and http(s) only. */
function linkUrl(link) {
  try {
    const url = new URL(link || "/", self.location.origin);
    if (url.protocol === "https:" || url.protocol === "http:") return url.href;
  } catch {
    // not a URL: open the site instead
  }
  return new URL("/", self.location.origin).href;
}

async function openLink(link) {
  const url = linkUrl(link);
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const client of windows) {
    if (client.url === url && "focus" in client) return client.focus();
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  event.waitUntil(openLink(data.link));
});

// A new version takes over at once: the worker keeps no state between events.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
