// The preferences form: a toggle per channel for all types and per type, mute, hiding
// one's online status, quiet hours, digest.

import { $, el } from "./dom.js";
import { typeLabel } from "./inbox.js";

/** The nine template types present after the first migration (docs/api.md, "The nine seed templates"). */
export const TYPES = [
  "assignment_created",
  "assignment_due_soon",
  "grade_posted",
  "friend_request",
  "group_invitation",
  "achievement_unlocked",
  "study_goal_milestone",
  "new_message",
  "system_announcement",
];
/** The channels a preference may name (docs/api.md, "Preferences"), in column order. */
export const CHANNELS = ["in_app", "email", "push", "sms", "webhook"];
const CHANNEL_LABELS = { in_app: "In-app", email: "Email", push: "Push", sms: "SMS", webhook: "Webhook" };
/** A channel the preferences do not name is on or off by default (docs/api.md, "Preferences"). */
const DEFAULTS = { in_app: true, email: true, push: false, sms: false, webhook: false };
const ALL_TYPES = "All types";

/**
 * Loads, shows and saves the signed-in user's preferences. The "All types" row is
 * `channels`; a type's switch shows its own choice, else the "All types" one, and follows
 * that row until it is changed. Save sends only what was changed on the page (PATCH), so
 * a change made elsewhere meanwhile (another tab, an email's unsubscribe link) is kept.
 */
export class PreferencesForm {
  constructor(hub) {
    this.hub = hub;
    // Until the hub answers, the defaults (what a user who never saved has).
    this.stored = { muted: false, channels: { ...DEFAULTS }, types: {}, quiet_hours: null, digest: "off",
                    hide_presence: false };
    this.all = new Map(); // channel -> checkbox of the "All types" row
    this.boxes = new Map(); // "type/channel" -> checkbox
    this.touched = new Set(); // "type/channel" keys switched on the page since the last show()
    this.buildRows();
    $("prefs-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    $("pref-quiet").addEventListener("change", () => this.syncQuiet());
    $("prefs-form").addEventListener("input", () => this.status(""));
  }

  buildRows() {
    // One cell per channel, its switch labelled "<row>: <channel>" and kept in `boxes`.
    const cells = (row, boxes, key, onChange) =>
      CHANNELS.map((channel) => {
        const box = el("input", {
          type: "checkbox",
          attrs: { "aria-label": `${row}: ${CHANNEL_LABELS[channel]}` },
          on: { change: () => onChange(channel) },
        });
        boxes.set(key(channel), box);
        return el("td", {}, box);
      });
    const all = el(
      "tr",
      { class: "prefs-all" },
      el("th", { scope: "row", text: ALL_TYPES }),
      ...cells(ALL_TYPES, this.all, (channel) => channel, (channel) => this.follow(channel)),
    );
    $("prefs-all").replaceChildren(all);
    const rows = TYPES.map((type) => {
      const key = (channel) => `${type}/${channel}`;
      return el(
        "tr",
        {},
        el("th", { scope: "row", text: typeLabel(type) }),
        ...cells(typeLabel(type), this.boxes, key, (channel) => this.touched.add(key(channel))),
      );
    });
    $("prefs-types").replaceChildren(...rows);
  }

  async load() {
    try {
      this.show(await this.hub.getPreferences());
    } catch (err) {
      this.status("Could not load preferences: " + err.message);
    }
  }

  /** The stored "All types" setting of `channel`. */
  global(channel) {
    return this.stored.channels[channel] ?? DEFAULTS[channel];
  }

  /** The stored choice of `type` itself for `channel` (undefined: it follows "All types"). */
  own(type, channel) {
    const map = this.stored.types[type];
    return map ? map[channel] : undefined;
  }

  show(prefs) {
    this.stored = prefs;
    this.touched.clear();
    $("pref-muted").checked = prefs.muted;
    $("pref-hide-presence").checked = Boolean(prefs.hide_presence);
    for (const channel of CHANNELS) this.all.get(channel).checked = this.global(channel);
    for (const type of TYPES) {
      for (const channel of CHANNELS) {
        // A type's own choice wins, then the channel's (docs/api.md, "Preferences").
        const box = this.boxes.get(`${type}/${channel}`);
        box.checked = this.own(type, channel) ?? this.global(channel);
      }
    }
    const quiet = prefs.quiet_hours;
    $("pref-quiet").checked = Boolean(quiet);
    if (quiet) {
      $("pref-quiet-start").value = quiet.start;
      $("pref-quiet-end").value = quiet.end;
      $("pref-quiet-tz").value = quiet.timezone;
    } else {
      $("pref-quiet-tz").value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    }
    $("pref-digest").value = prefs.digest;
    this.syncQuiet();
  }

  /** The "All types" switch of `channel` changed: the types that follow it show it. */
  follow(channel) {
    const on = this.all.get(channel).checked;
    for (const type of TYPES) {
      const key = `${type}/${channel}`;
      if (this.own(type, channel) === undefined && !this.touched.has(key)) {
        this.boxes.get(key).checked = on;
      }
    }
  }

  syncQuiet() {
    const on = $("pref-quiet").checked;
    for (const id of ["pref-quiet-start", "pref-quiet-end", "pref-quiet-tz"]) $(id).disabled = !on;
  }

  /** What was changed on the page since the last show(), as a PATCH body. */
  patch() {
    const stored = this.stored;
    const patch = {};
    if ($("pref-muted").checked !== stored.muted) patch.muted = $("pref-muted").checked;
    const hide = $("pref-hide-presence").checked;
    if (hide !== Boolean(stored.hide_presence)) patch.hide_presence = hide;
    const channels = {};
    for (const channel of CHANNELS) {
      const on = this.all.get(channel).checked;
      if (on !== this.global(channel)) channels[channel] = on;
    }
    if (Object.keys(channels).length) patch.channels = channels;
    const types = {};
    for (const type of TYPES) {
      for (const channel of CHANNELS) {
        // What the type gets without a word about it: its own choice, else "All types".
        const follows = this.own(type, channel) ?? this.all.get(channel).checked;
        const on = this.boxes.get(`${type}/${channel}`).checked;
        if (on !== follows) (types[type] ??= {})[channel] = on;
      }
    }
    if (Object.keys(types).length) patch.types = types;
    const quiet = $("pref-quiet").checked
      ? {
          start: $("pref-quiet-start").value,
          end: $("pref-quiet-end").value,
          timezone: $("pref-quiet-tz").value.trim() || "UTC",
        }
      : null;
    const was = stored.quiet_hours;
    const same = quiet && was
      ? quiet.start === was.start && quiet.end === was.end && quiet.timezone === was.timezone
      : quiet === was;
    if (!same) patch.quiet_hours = quiet;
    if ($("pref-digest").value !== stored.digest) patch.digest = $("pref-digest").value;
    return patch;
  }

  async save() {
    const button = $("prefs-save");
    button.disabled = true;
    this.status("Saving…");
    try {
      this.show(await this.hub.patchPreferences(this.patch()));
      this.status("Saved.");
    } catch (err) {
      const fields = err.problem && err.problem.errors;
      const detail = fields && fields.length ? fields.map((f) => f.msg).join("; ") : err.message;
      this.status("Not saved: " + detail);
    } finally {
      button.disabled = false;
    }
  }

  status(text) {
    $("prefs-status").textContent = text;
  }
}
