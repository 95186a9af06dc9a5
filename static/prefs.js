// The preferences form: per type x channel toggles, mute, quiet hours, digest.

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
export const CHANNELS = ["in_app", "email", "push"];
const CHANNEL_LABELS = { in_app: "In-app", email: "Email", push: "Push" };

/** Loads, shows and saves the signed-in user's preferences. */
export class PreferencesForm {
  constructor(hub) {
    this.hub = hub;
    this.stored = null;
    this.boxes = new Map(); // "type/channel" -> checkbox
    this.buildRows();
    $("prefs-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    $("pref-quiet").addEventListener("change", () => this.syncQuiet());
    $("prefs-form").addEventListener("input", () => this.status(""));
  }

  buildRows() {
    const rows = TYPES.map((type) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", text: typeLabel(type) }),
        ...CHANNELS.map((channel) => {
          const box = el("input", {
            type: "checkbox",
            attrs: { "aria-label": `${typeLabel(type)}: ${CHANNEL_LABELS[channel]}` },
          });
          this.boxes.set(`${type}/${channel}`, box);
          return el("td", {}, box);
        }),
      ),
    );
    $("prefs-types").replaceChildren(...rows);
  }

  async load() {
    try {
      this.show(await this.hub.getPreferences());
    } catch (err) {
      this.status("Could not load preferences: " + err.message);
    }
  }

  show(prefs) {
    this.stored = prefs;
    $("pref-muted").checked = prefs.muted;
    for (const type of TYPES) {
      for (const channel of CHANNELS) {
        // A type or channel left out follows the global channel setting (docs/api.md, "Preferences").
        const own = prefs.types[type] && prefs.types[type][channel];
        const fallback = prefs.channels[channel] ?? false;
        this.boxes.get(`${type}/${channel}`).checked = own ?? fallback;
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

  syncQuiet() {
    const on = $("pref-quiet").checked;
    for (const id of ["pref-quiet-start", "pref-quiet-end", "pref-quiet-tz"]) $(id).disabled = !on;
  }

  /** The form as a Preferences object; only choices that differ from `channels` are kept. */
  value() {
    const channels = { ...(this.stored ? this.stored.channels : {}) };
    for (const channel of CHANNELS) channels[channel] ??= channel !== "push";
    const types = {};
    // Types this page does not know about are kept as they were.
    for (const [type, map] of Object.entries(this.stored ? this.stored.types : {})) {
      if (!TYPES.includes(type)) types[type] = map;
    }
    for (const type of TYPES) {
      for (const channel of CHANNELS) {
        const on = this.boxes.get(`${type}/${channel}`).checked;
        if (on !== channels[channel]) (types[type] ??= {})[channel] = on;
      }
    }
    return {
      muted: $("pref-muted").checked,
      channels,
      types,
      quiet_hours: $("pref-quiet").checked
        ? {
            start: $("pref-quiet-start").value,
            end: $("pref-quiet-end").value,
            timezone: $("pref-quiet-tz").value.trim() || "UTC",
          }
        : null,
      digest: $("pref-digest").value,
    };
  }

  async save() {
    const button = $("prefs-save");
    button.disabled = true;
    this.status("Saving…");
    try {
      this.show(await this.hub.putPreferences(this.value()));
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
