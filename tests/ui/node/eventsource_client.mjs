// A standard EventSource client on notifyhub's SSE stream: the npm package
// `eventsource` (4.1.1, with `eventsource-parser` 3.1.1; MIT), vendored in
// ./node_modules so the test needs no network: their published dist/index.js (without
// the source map line) and a package.json trimmed to what Node needs to resolve them.
// It reconnects by itself, as EventSource does. Prints one JSON line per event it dispatches: {"type","lastEventId","data"},
// and {"type":"open"} on every (re)connection.
//
// usage: node eventsource_client.mjs <stream url>
import { EventSource } from "eventsource";

const TYPES = [
  "hello", "resync", "notification.created", "notifications.read",
  "notification.deleted", "message.created", "messages.read", "message.deleted",
  "announcement.created", "announcement.deleted", "typing",
];

const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const source = new EventSource(process.argv[2]);
source.onopen = () => print({ type: "open" });
for (const type of TYPES) {
  source.addEventListener(type, (event) => {
    print({ type, lastEventId: event.lastEventId, data: JSON.parse(event.data) });
  });
}
