// The demo page: signs in, connects a NotifyHub client and wires the panels to it.

import { Chat } from "./chat.js";
import { $, announce, avatar, el } from "./dom.js";
import { Inbox } from "./inbox.js";
import { NotifyHub } from "./notifyhub.js";
import { PreferencesForm } from "./prefs.js";
import { PushSwitch } from "./push.js";

const DEMO_USERS = ["alice", "bob", "carol"];
const DISMISSED_KEY = "notifyhub.dismissed-announcements";

/** Options from the address fragment: #token=<jwt>, #user=<id> (demo), &transport=. */
function fragment() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

/** The `sub` claim of a JWT, read without verifying (the hub verifies). */
function subject(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).sub || null;
  } catch {
    return null;
  }
}

async function demoToken(userId) {
  const response = await fetch("/demo/token?user_id=" + encodeURIComponent(userId));
  if (response.status === 404) throw new Error("not demo mode");
  if (!response.ok) throw new Error(`the hub answered ${response.status}`);
  return (await response.json()).token;
}

// ---- sign-in ------------------------------------------------------------------------

function showSignIn(message) {
  const card = $("signin");
  card.hidden = false;
  const buttons = DEMO_USERS.map((user) =>
    el(
      "button",
      { type: "button", class: "user-choice", on: { click: () => chooseDemoUser(user) } },
      avatar(user),
      el("span", { text: user }),
    ),
  );
  $("signin-users").replaceChildren(...buttons);
  if (message) signInError(message);
}

function signInError(message) {
  $("signin-error").textContent = message;
  $("signin-error").hidden = !message;
}

async function chooseDemoUser(user) {
  try {
    await demoToken(user);
  } catch (err) {
    signInError(
      err.message === "not demo mode"
        ? "This hub is not in demo mode. Open the page with #token=<your JWT> in the address."
        : "Could not sign in: " + err.message,
    );
    return;
  }
  location.hash = "user=" + encodeURIComponent(user);
  location.reload();
}

// ---- connection status --------------------------------------------------------------

function showStatus({ status, reason, transport }) {
  const node = $("connection-status");
  node.dataset.state = status;
  node.textContent = status;
  const why = {
    unauthorized: "Your session has expired. Reload the page with a fresh token.",
    forbidden: "The hub refused this page's origin.",
    "bad-since": "The hub refused to resume this connection. Reload the page.",
    policy: "The hub closed the connection (too many frames). Reload the page.",
  }[reason];
  node.title = why || (status === "connected" ? `Live over ${transport === "sse" ? "SSE" : "WebSocket"}` : "Live connection");
  if (why) announce(why);
}

/** "tabs sharing this connection: N": the leader tab holds the socket for all of them. */
function showShare({ role, tabs }) {
  const node = $("shared-tabs");
  node.hidden = !role;
  node.dataset.role = role || "";
  $("shared-tabs-count").textContent = String(tabs);
  node.title = {
    leader: "This tab holds the live connection for every tab of this browser showing it.",
    follower: "Another tab of this browser holds the live connection; this one follows it.",
    solo: "This tab has a live connection of its own.",
  }[role] || "";
}

// ---- announcements ------------------------------------------------------------------

class Announcements {
  constructor(hub) {
    this.hub = hub;
    this.items = new Map();
    this.dismissed = new Set(JSON.parse(sessionStorage.getItem(DISMISSED_KEY) || "[]"));
    hub.on("announcement.created", (a) => {
      this.items.set(a.id, a);
      announce(`Announcement: ${a.title}`);
      this.render();
    });
    hub.on("announcement.deleted", ({ id }) => {
      this.items.delete(id);
      this.render();
    });
  }

  /** Announcements are ephemeral events, so refetch after every (re)connect. */
  async reload() {
    try {
      const { items } = await this.hub.announcements();
      this.items = new Map(items.map((a) => [a.id, a]));
      this.render();
    } catch {
      // Kept as they were; the next reconnect tries again.
    }
  }

  render() {
    const now = Date.now();
    const shown = [...this.items.values()]
      .filter((a) => !this.dismissed.has(a.id))
      .filter((a) => !a.ends_at || new Date(a.ends_at).getTime() > now)
      .sort((a, b) => b.id - a.id);
    const nodes = shown.map((a) =>
      el(
        "div",
        { class: "announcement level-" + a.level, attrs: { role: a.level === "critical" ? "alert" : "note" } },
        el(
          "p",
          { class: "announcement-text" },
          el("strong", { text: a.title }),
          a.body ? el("span", { text: " " + a.body }) : null,
        ),
        el("button", {
          type: "button",
          class: "icon-button",
          text: "×",
          attrs: { "aria-label": "Dismiss announcement: " + a.title },
          on: { click: () => this.dismiss(a.id) },
        }),
      ),
    );
    $("announcements").replaceChildren(...nodes);
  }

  dismiss(id) {
    this.dismissed.add(id);
    sessionStorage.setItem(DISMISSED_KEY, JSON.stringify([...this.dismissed]));
    this.render();
  }
}

// ---- start --------------------------------------------------------------------------

function showAccount(userId, demo) {
  $("account").hidden = false;
  $("account-name").textContent = userId;
  $("account-avatar").replaceWith(avatar(userId, "account-avatar"));
  if (demo) {
    const button = $("switch-user");
    button.hidden = false;
    button.addEventListener("click", () => {
      history.replaceState(null, "", location.pathname);
      location.reload();
    });
  }
}

function start({ token, getToken, transport, demo }) {
  const hub = new NotifyHub({ token, getToken, transport });
  const me = subject(token);
  showAccount(me, demo);
  $("chat").hidden = false;
  $("prefs").hidden = false;

  hub.on("status", showStatus);
  hub.on("share", showShare);
  const inbox = new Inbox(hub);
  const chat = new Chat(hub, me);
  const prefs = new PreferencesForm(hub);
  const announcements = new Announcements(hub);

  let first = true;
  hub.on("hello", () => {
    // The first page is loaded after the first hello so that every later change
    // arrives as an event; on reconnects the hub replays what was missed.
    if (first) inbox.reload();
    first = false;
    chat.refreshConversations();
    announcements.reload();
  });
  prefs.load();
  new PushSwitch(hub).load();
  hub.connect();
  window.addEventListener("pagehide", () => hub.close());
  // Back from the back/forward cache: resume where the page left off.
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) hub.connect();
  });
}

async function main() {
  const params = fragment();
  const transport = params.get("transport") || "auto";
  const token = params.get("token");
  if (token) {
    start({ token, transport, demo: false });
    return;
  }
  const user = params.get("user");
  if (user) {
    try {
      const first = await demoToken(user);
      start({ token: first, getToken: () => demoToken(user), transport, demo: true });
    } catch {
      showSignIn("Could not get a demo token for " + user + ".");
    }
    return;
  }
  showSignIn("");
}

main();
