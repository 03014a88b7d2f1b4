/**
 * The seed's chat room in a web page: join a `chat:*` room of the chat example server, show its
 * messages, send with the typed `sendMessage` method. The subscription reconnects and resumes
 * by itself (stop and restart the server: nothing is lost), and says so when history was lost.
 */
import { createClient, type ConnectionState } from "../../src/index.js";
import { chatMessage, ping, sendMessage } from "./contract.js";

interface DemoConfig {
  /** The chat server, as the browser reaches it (grpc-web). */
  serverUrl: string;
}

const params = new URLSearchParams(location.search);
const user = params.get("user") ?? `guest-${Math.floor(Math.random() * 1000)}`;
const room = params.get("room") ?? "lobby";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
$("user").textContent = user;
$("room").textContent = room;

function show(text: string, options: { from?: string; className?: string } = {}): void {
  const item = document.createElement("li");
  if (options.className) item.className = options.className;
  if (options.from) {
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = `${options.from}:`;
    item.append(from);
  }
  item.append(text);
  const list = $("messages");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

function describe(state: ConnectionState): string {
  switch (state.kind) {
    case "live":
      return "live";
    case "connecting":
      return state.retry === 0 ? "connecting…" : `reconnecting (try ${state.retry})…`;
    case "backingOff":
      return `reconnecting in ${Math.max(0, Math.ceil((state.untilMs - Date.now()) / 1000))} s…`;
    case "fetchingToken":
    case "tokenBackoff":
      return "getting a token…";
    case "closed":
      return "closed";
  }
}

async function main(): Promise<void> {
  const config = (await fetch("/config.json").then((r) => r.json())) as DemoConfig;
  const client = createClient({ baseUrl: config.serverUrl });
  // The app server (serve.mjs) holds the signing key and mints the token: never the page.
  const query = new URLSearchParams({ user, room });
  const sub = client.subscribe({
    getToken: ({ signal }) =>
      fetch(`/token?${query}`, { signal }).then((r) => {
        if (!r.ok) throw new Error(`token: HTTP ${r.status}`);
        return r.text();
      }),
    refreshBeforeExpirySeconds: 60,
  });
  addEventListener("pagehide", () => sub.close());

  const status = $("status");
  sub.onProgress((progress) => {
    status.textContent = describe(progress.state);
    status.className = progress.state.kind === "live" ? "live" : "";
  });

  $<HTMLFormElement>("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $<HTMLInputElement>("text");
    const message = input.value.trim();
    if (message === "") return;
    input.value = "";
    // The room sends it to everyone but us: show our own copy here.
    show(message, { from: user, className: "mine" });
    sub.call(sendMessage, { message }).catch((error: unknown) => show(`not sent: ${String(error)}`, { className: "notice" }));
  });

  // A typed call: the contract says ping answers a string.
  sub
    .call(ping)
    .then((pong) => console.info(`the room answered ${pong}`))
    .catch(() => {});

  for await (const item of sub) {
    if (item.kind === "resumed") {
      show(`some history was lost (${String(item.failure)}): messages may be missing above`, { className: "notice" });
      continue;
    }
    const message = chatMessage(item.payload);
    if (message) show(message.message, { from: message.from ?? "someone" });
  }
}

main().catch((error: unknown) => {
  $("status").textContent = `failed: ${String(error)}`;
  show(String(error), { className: "notice" });
});
