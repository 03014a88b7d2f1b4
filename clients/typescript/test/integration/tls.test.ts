/**
 * https in Node: `fetchWithCa` (what `--ca-cert` uses) trusts a certificate that only the given
 * file vouches for, and nothing else does. The certificates are the server's own: `serve
 * --dev-tls` makes one for localhost and 127.0.0.1 in its data dir (no openssl needed).
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";

import { Code } from "@connectrpc/connect";

import { createAdmin } from "../../src/admin.js";
import { createClient } from "../../src/client.js";
import { StatusError } from "../../src/errors.js";
import { fetchWithCa } from "../../src/node.js";
import { signingProvider } from "../../src/sign.js";
import { Reader, untilProgress } from "../helpers/reader.js";
import {
  API_KEY,
  bounded,
  devCertificate,
  missingBinary,
  missingTls,
  restart,
  serverBin,
  SIGNING_KEY,
  startServer,
  type RunningServer,
} from "../helpers/server.js";

const skip = missingBinary(serverBin(), "DURABLE_ITERATOR_BIN") ?? missingTls();

const running: RunningServer[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});

describe("a private CA", { skip }, () => {
  it("is trusted by fetchWithCa, and only by it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "di-ts-ca-"));
    try {
      const tls = await devCertificate(dir);
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

describe("the server over https (serve --dev-tls)", { skip }, () => {
  async function serveTls(): Promise<RunningServer> {
    const server = await startServer({ tls: "dev" });
    running.push(server);
    return server;
  }

  it("prints the certificate it made, in its data dir, for localhost, 127.0.0.1 and ::1", async () => {
    const server = await serveTls();
    const printed = server.devCertificate!;
    assert.equal(printed.cert, join(server.dataDir, "dev-tls-cert.pem"));
    const certificate = new X509Certificate(readFileSync(printed.cert));
    assert.equal(printed.fingerprint, certificate.fingerprint256, "the fingerprint printed is the certificate's");
    assert.match(certificate.subjectAltName ?? "", /DNS:localhost/);
    assert.match(certificate.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
    assert.match(certificate.subjectAltName ?? "", /IP Address:0:0:0:0:0:0:0:1/);
    assert.ok(certificate.checkIP("127.0.0.1"));
  });

  it("publishes and subscribes with fetchWithCa; without it the certificate is refused", async () => {
    const server = await serveTls();
    assert.match(server.baseUrl, /^https:/);
    const fetch = await fetchWithCa(server.caCert);
    const client = createClient({ baseUrl: server.baseUrl, fetch });
    const sub = client.subscribe({ getToken: signingProvider({ signingKey: SIGNING_KEY, channel: "lobby" }) });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live over https");
    const admin = createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY, fetch });
    const ids = [await admin.publish({ channel: "lobby", payload: { n: 0 } }), await admin.publish({ channel: "lobby", payload: { n: 1 } })];
    await reader.untilEvents(2);
    assert.deepEqual(reader.events.map((e) => e.id), ids);
    assert.equal(sub.progress.connections, 1);

    const untrusted = createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY });
    await assert.rejects(untrusted.publish({ channel: "lobby", payload: 2 }), (e: unknown) => {
      assert.ok(e instanceof StatusError);
      assert.equal(e.code, Code.Unavailable, "the certificate is refused without the CA file");
      return true;
    });
    // Plaintext on the TLS port reaches nothing either.
    const plain = createAdmin({ baseUrl: server.baseUrl.replace(/^https:/, "http:"), apiKey: API_KEY });
    await assert.rejects(plain.publish({ channel: "lobby", payload: 3 }), (e: unknown) => {
      assert.ok(e instanceof StatusError);
      assert.equal(e.code, Code.Unavailable);
      return true;
    });
    await sub.return();
    await bounded(reader.finished, 5_000, "the reader to finish");
    assert.equal(reader.error, undefined);
    assert.equal(reader.events.length, 2, "nothing published without trust arrived");
  });

  it("keeps its certificate across a restart on the same data dir: a subscription resumes over https", async () => {
    let server = await serveTls();
    const before = readFileSync(server.caCert, "utf8");
    const fetch = await fetchWithCa(server.caCert);
    const client = createClient({ baseUrl: server.baseUrl, fetch });
    const sub = client.subscribe({
      getToken: signingProvider({ signingKey: SIGNING_KEY, channel: "lobby" }),
      backoff: { baseMs: 100, capMs: 500 },
    });
    const reader = new Reader(sub);
    await untilProgress(sub, () => sub.progress.state.kind === "live", "live");
    await createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY, fetch }).publish({ channel: "lobby", payload: { n: 0 } });
    await reader.untilEvents(1);
    await server.kill();
    server = await restart(server);
    running.push(server);
    assert.equal(server.devCertificate!.cert, join(server.dataDir, "dev-tls-cert.pem"));
    assert.equal(readFileSync(server.caCert, "utf8"), before, "made once: the same certificate after the restart");
    // The fetch made before the restart still trusts the server: nothing to hand out again.
    await untilProgress(sub, () => sub.progress.connections >= 2 && sub.progress.state.kind === "live", "live again");
    await createAdmin({ baseUrl: server.baseUrl, apiKey: API_KEY, fetch }).publish({ channel: "lobby", payload: { n: 1 } });
    await reader.untilEvents(2);
    assert.deepEqual(reader.events.map((e) => (e.payload as { n: number }).n), [0, 1]);
    sub.close();
  });
});
