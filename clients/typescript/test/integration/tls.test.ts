/**
 * `--ca-cert` / `fetchWithCa`: an https server whose certificate only the given file vouches
 * for is reached with it and refused without it. (The durable-iterator server gets TLS later;
 * this proves the client half now, against a Node https server.)
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import { Code } from "@connectrpc/connect";

import { createAdmin } from "../../src/admin.js";
import { StatusError } from "../../src/errors.js";
import { fetchWithCa } from "../../src/node.js";
import { makeCertificate } from "../helpers/server.js";

describe("a private CA", () => {
  it("is trusted by fetchWithCa, and only by it", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "di-ts-ca-"));
    try {
      const tls = makeCertificate(dir);
      if (!tls) return t.skip("openssl is needed to make a test certificate");
      const server = createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, (_, response) => {
        // Enough of grpc-web for a client to read a status: a trailers-only answer.
        response.writeHead(200, { "content-type": "application/grpc-web+proto", "grpc-status": "12", "grpc-message": "unimplemented here" });
        response.end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const baseUrl = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
      try {
        const trusted = createAdmin({ baseUrl, apiKey: "k", fetch: await fetchWithCa(tls.cert) });
        await assert.rejects(trusted.publish({ channel: "c", payload: 1 }), (e: unknown) => {
          assert.ok(e instanceof StatusError);
          assert.equal(e.code, Code.Unimplemented, "the TLS handshake succeeded: the server's status came through");
          return true;
        });
        const untrusted = createAdmin({ baseUrl, apiKey: "k" });
        await assert.rejects(untrusted.publish({ channel: "c", payload: 1 }), (e: unknown) => {
          assert.ok(e instanceof StatusError);
          assert.equal(e.code, Code.Unavailable, "the certificate is refused: the request never reached the server");
          return true;
        });
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
