#!/usr/bin/env node
// The chat demo's app server (`npm run demo`): serves the page and its bundled script, and mints
// tokens with the signing key, as a real app server would (the browser never sees the key).
//
//   DURABLE_ITERATOR_SIGNING_KEY  the chat server's signing key (default dev-signing-key)
//   DURABLE_ITERATOR_SERVER       the chat server as the browser reaches it (default http://127.0.0.1:50051)
//   DEMO_LISTEN                   where this page server listens (default 127.0.0.1:8080)
//
// Needs the built package (npm install builds it).
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

import { signToken, firstKey } from "../../dist/src/node.js";

const here = dirname(fileURLToPath(import.meta.url));

/** Starts the demo's page server; resolves with its URL and a close function. */
export async function startDemo({
  listen = process.env.DEMO_LISTEN ?? "127.0.0.1:8080",
  serverUrl = process.env.DURABLE_ITERATOR_SERVER ?? "http://127.0.0.1:50051",
  signingKey = process.env.DURABLE_ITERATOR_SIGNING_KEY || "dev-signing-key",
} = {}) {
  const key = firstKey(signingKey);
  const bundle = await build({
    entryPoints: [join(here, "main.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "warning",
  });
  const script = bundle.outputFiles[0].text;
  const page = readFileSync(join(here, "index.html"), "utf8");
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://demo");
    if (url.pathname === "/") {
      response.setHeader("content-type", "text/html; charset=utf-8");
      response.end(page);
    } else if (url.pathname === "/main.js") {
      response.setHeader("content-type", "text/javascript; charset=utf-8");
      response.end(script);
    } else if (url.pathname === "/config.json") {
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify({ serverUrl }));
    } else if (url.pathname === "/token") {
      // A real app server checks who is asking first; the demo believes ?user=.
      const user = (url.searchParams.get("user") ?? "guest").slice(0, 64);
      const room = (url.searchParams.get("room") ?? "lobby").replace(/[^\w-]/g, "").slice(0, 64) || "lobby";
      const now = Math.floor(Date.now() / 1000);
      response.setHeader("content-type", "text/plain");
      response.end(
        signToken(key, {
          chn: `chat:${room}`,
          att: { userId: user },
          rpc: ["sendMessage", "routerClient"],
          iat: now,
          exp: now + 600,
        }),
      );
    } else {
      response.statusCode = 404;
      response.end("not found");
    }
  });
  const [host, port] = splitHostPort(listen);
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  const url = `http://${host}:${address.port}/`;
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}

function splitHostPort(listen) {
  const colon = listen.lastIndexOf(":");
  if (colon < 0) throw new Error(`DEMO_LISTEN must be host:port, not ${listen}`);
  return [listen.slice(0, colon), Number(listen.slice(colon + 1))];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const demo = await startDemo();
  const server = process.env.DURABLE_ITERATOR_SERVER ?? "http://127.0.0.1:50051";
  console.log(`chat demo on ${demo.url} (chat server: ${server})`);
  console.log(`open ${demo.url}?user=alice and ${demo.url}?user=bob in two tabs`);
}
