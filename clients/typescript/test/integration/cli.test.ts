/**
 * The `durable-iterator-ts` command as `conformance/` drives it: a child process against the
 * real server, its stdout and stderr read as JSON lines, stopped by SIGINT/SIGTERM.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";

import { signToken } from "../../src/sign.js";
import {
  API_KEY,
  bounded,
  killChild,
  missingBinary,
  missingTls,
  PACKAGE_ROOT,
  serverBin,
  SIGNING_KEY,
  startServer,
  type RunningServer,
} from "../helpers/server.js";

const BIN = join(PACKAGE_ROOT, "bin", "durable-iterator-ts.js");
const skip = missingBinary(serverBin(), "DURABLE_ITERATOR_BIN");

/** A running command: its output lines, and waits on them. */
class Command {
  readonly child: ChildProcess;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  #waiters = new Set<() => void>();

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DURABLE_ITERATOR_SIGNING_KEY: "", DURABLE_ITERATOR_API_KEY: "", DURABLE_ITERATOR_TOKEN: "", ...env },
    });
    const collect = (into: string[]) => {
      let partial = "";
      return (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split("\n");
        partial = lines.pop() ?? "";
        into.push(...lines);
        for (const waiter of [...this.#waiters]) waiter();
      };
    };
    this.child.stdout!.on("data", collect(this.stdout));
    this.child.stderr!.on("data", collect(this.stderr));
    this.exited = new Promise((resolve) =>
      this.child.on("close", (code) => {
        for (const waiter of [...this.#waiters]) waiter();
        resolve(code);
      }),
    );
  }

  /** stderr lines that are JSON objects (the rest are logs). */
  get notices(): Array<Record<string, Record<string, unknown>>> {
    return this.stderr.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  }

  get events(): Array<{ id: string; payload: unknown; published_at_ms: number }> {
    return this.stdout.filter((l) => l !== "").map((l) => JSON.parse(l));
  }

  async until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
    if (condition()) return;
    let waiter: () => void = () => {};
    try {
      await bounded(
        new Promise<void>((resolve) => {
          waiter = () => {
            if (condition()) resolve();
          };
          this.#waiters.add(waiter);
        }),
        ms,
        `${what}; stdout: ${this.stdout.join("\\n")}; stderr: ${this.stderr.join("\\n")}`,
      );
    } finally {
      this.#waiters.delete(waiter);
    }
  }

  async exit(ms = 20_000): Promise<number | null> {
    return bounded(this.exited, ms, "the command to exit");
  }
}

const commands: Command[] = [];
const servers: RunningServer[] = [];
const httpServers: Server[] = [];
function command(args: string[], env?: Record<string, string>): Command {
  const c = new Command(args, env);
  commands.push(c);
  return c;
}
afterEach(async () => {
  await Promise.all(commands.splice(0).map((c) => killChild(c.child, "SIGKILL")));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  await Promise.all(httpServers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function serve(options: Parameters<typeof startServer>[0] = {}): Promise<RunningServer> {
  const server = await startServer(options);
  servers.push(server);
  return server;
}

async function publish(server: RunningServer, json: string, extra: string[] = []): Promise<string> {
  const c = command(["publish", "--server", server.baseUrl, "--channel", "lobby", "--json", json, ...extra], {
    DURABLE_ITERATOR_API_KEY: API_KEY,
  });
  assert.equal(await c.exit(), 0, c.stderr.join("\n"));
  return c.stdout[0]!;
}

describe("the subscribe command", { skip }, () => {
  it("prints events on stdout and connections on stderr, and exits 0 on SIGTERM", async () => {
    const server = await serve();
    const sub = command(["subscribe", "--server", server.baseUrl, "--channel", "lobby"], {
      DURABLE_ITERATOR_SIGNING_KEY: `${SIGNING_KEY},an-old-key`,
    });
    await sub.until(() => sub.notices.some((n) => n.connected), "the connected line");
    const connected = sub.notices.find((n) => n.connected)!.connected!;
    assert.equal(connected.connections, 1);
    assert.equal(typeof connected.session_id, "string");
    assert.match(String(connected.session_ticket), /^.+\..+$/);
    const ids = [await publish(server, '{"text":"hello","n":1}'), await publish(server, "[1,2.5,null]")];
    await sub.until(() => sub.events.length === 2, "two events");
    assert.deepEqual(sub.events.map((e) => e.id), ids);
    assert.deepEqual(sub.events.map((e) => e.payload), [{ n: 1, text: "hello" }, [1, 2.5, null]]);
    assert.match(sub.stdout[0]!, /^\{"id":"[^"]+","payload":\{"n":1,"text":"hello"\},"published_at_ms":\d+\}$/);
    sub.child.kill("SIGTERM");
    assert.equal(await sub.exit(), 0);
    assert.ok(sub.stderr.every((l) => !l.startsWith("{") || /^\{"(connected|resume|refreshed)"/.test(l)), sub.stderr.join("\n"));
  });

  it("resumes a session with --from and --session-ticket, with tokens from --token-url; SIGINT exits 0", async () => {
    const server = await serve();
    let gets = 0;
    const tokenServer = createServer((_, response) => {
      gets += 1;
      const now = Math.floor(Date.now() / 1000);
      response.end(`  ${signToken(SIGNING_KEY, { chn: "lobby", iat: now, exp: now + 3600 })}\n`);
    });
    httpServers.push(tokenServer);
    await new Promise<void>((resolve) => tokenServer.listen(0, "127.0.0.1", resolve));
    const tokenUrl = `http://127.0.0.1:${(tokenServer.address() as { port: number }).port}/token`;

    const first = command(["subscribe", "--server", server.baseUrl, "--token-url", tokenUrl]);
    await first.until(() => first.notices.some((n) => n.connected), "connected");
    const { session_id, session_ticket } = first.notices.find((n) => n.connected)!.connected!;
    const last = await publish(server, '{"n":1}');
    await first.until(() => first.events.length === 1, "the first event");
    first.child.kill("SIGINT");
    assert.equal(await first.exit(), 0);
    assert.equal(gets, 1);

    await publish(server, '{"n":2}');
    await publish(server, '{"n":3}');
    const second = command([
      "subscribe",
      "--server",
      server.baseUrl,
      "--token-url",
      tokenUrl,
      "--from",
      last,
      "--session-ticket",
      String(session_ticket),
    ]);
    await second.until(() => second.events.length === 2, "the missed events");
    assert.deepEqual(second.events.map((e) => e.payload), [{ n: 2 }, { n: 3 }]);
    const connected = second.notices.find((n) => n.connected)!.connected!;
    assert.equal(connected.session_id, session_id, "the same session");
    second.child.kill("SIGINT");
    assert.equal(await second.exit(), 0);
  });

  it("prints a resume report that lost history", async () => {
    const server = await serve();
    const known = await publish(server, '{"n":0}');
    const epoch = known.split("-")[0]!;
    const foreign = `${epoch === "00000000" ? "11111111" : "00000000"}-0000000000000001`;
    const sub = command(["subscribe", "--server", server.baseUrl, "--channel", "lobby", "--from", foreign], {
      DURABLE_ITERATOR_SIGNING_KEY: SIGNING_KEY,
    });
    await sub.until(() => sub.notices.some((n) => n.resume), "the resume line");
    const line = sub.stderr.find((l) => l.startsWith('{"resume"'))!;
    const report = JSON.parse(line).resume;
    assert.deepEqual(Object.keys(report), ["recovered", "failure", "last_event_id", "replayed", "oldest_retained_id", "session_id"]);
    assert.equal(report.recovered, false);
    assert.equal(report.failure, "store_reset");
    assert.equal(report.last_event_id, foreign);
    // The connected line of the stream comes before its report.
    assert.ok(sub.stderr.findIndex((l) => l.startsWith('{"connected"')) < sub.stderr.indexOf(line));
    sub.child.kill("SIGTERM");
    assert.equal(await sub.exit(), 0);
  });

  it("prints the error and exits 1 on a fatal status", async () => {
    const server = await serve();
    const sub = command(["subscribe", "--server", server.baseUrl, "--channel", "lobby", "--from", "not-an-id"], {
      DURABLE_ITERATOR_SIGNING_KEY: SIGNING_KEY,
    });
    assert.equal(await sub.exit(), 1);
    const error = sub.notices.find((n) => n.error)!.error!;
    assert.equal(error.code, "INVALID_ARGUMENT");
    assert.equal(typeof error.message, "string");
  });

  it("prints an error with a null code for a failure without status", async () => {
    const sub = command(["subscribe", "--server", "http://127.0.0.1:9", "--token-url", "http://127.0.0.1:9/token"]);
    // The provider is asked 5 times with patient backoff (0.5 s, 1 s, 2 s, 4 s at least).
    assert.equal(await sub.exit(30_000), 1);
    const error = sub.notices.find((n) => n.error)!.error!;
    assert.equal(error.code, null);
    assert.match(String(error.message), /token provider failed 5 times/);
  });

  it("publishes with filters: --tags '' reaches nobody", async () => {
    const server = await serve();
    const sub = command(["subscribe", "--server", server.baseUrl, "--channel", "lobby", "--tags", "a"], {
      DURABLE_ITERATOR_SIGNING_KEY: SIGNING_KEY,
    });
    await sub.until(() => sub.notices.some((n) => n.connected), "connected");
    await publish(server, '"nobody"', ["--tags", ""]);
    await publish(server, '"tag b"', ["--tags", "b"]);
    const id = await publish(server, '"tag a"', ["--tags", "b,a"]);
    await sub.until(() => sub.events.length >= 1, "the event");
    assert.deepEqual(sub.events.map((e) => [e.id, e.payload]), [[id, "tag a"]]);
    sub.child.kill("SIGTERM");
    assert.equal(await sub.exit(), 0);
  });
});

describe("the commands over https", { skip: skip ?? missingTls() }, () => {
  it("subscribe and publish reach a serve --dev-tls server with --ca-cert, and fail without it", async () => {
    const server = await serve({ tls: "dev" });
    const ca = server.caCert;
    const sub = command(["subscribe", "--server", server.baseUrl, "--channel", "lobby", "--ca-cert", ca], {
      DURABLE_ITERATOR_SIGNING_KEY: SIGNING_KEY,
    });
    await sub.until(() => sub.notices.some((n) => n.connected), "the connected line");
    const published = command(["publish", "--server", server.baseUrl, "--channel", "lobby", "--json", '{"n":1}', "--ca-cert", ca], {
      DURABLE_ITERATOR_API_KEY: API_KEY,
    });
    assert.equal(await published.exit(), 0, published.stderr.join("\n"));
    const id = published.stdout[0]!;
    await sub.until(() => sub.events.length === 1, "the event");
    assert.deepEqual(sub.events.map((e) => [e.id, e.payload]), [[id, { n: 1 }]]);

    // Without the CA file the certificate is refused: an error, not a hang.
    const refused = command(["publish", "--server", server.baseUrl, "--channel", "lobby", "--json", "2"], {
      DURABLE_ITERATOR_API_KEY: API_KEY,
    });
    assert.equal(await refused.exit(), 1, refused.stderr.join("\n"));
    assert.equal(refused.stdout.filter((l) => l !== "").length, 0);
    sub.child.kill("SIGTERM");
    assert.equal(await sub.exit(), 0);
    assert.equal(sub.events.length, 1);
  });
});

describe("the command's arguments", () => {
  const cases: Array<[string, string[]]> = [
    ["no command", []],
    ["an unknown command", ["frobnicate"]],
    ["an unknown flag", ["subscribe", "--token", "t", "--bogus"]],
    ["--token with --channel", ["subscribe", "--token", "t", "--channel", "c"]],
    ["no token source", ["subscribe"]],
    ["--channel without a key", ["subscribe", "--channel", "c"]],
    ["--tags without --channel", ["subscribe", "--token", "t", "--tags", "a"]],
    ["a bad ttl", ["subscribe", "--channel", "c", "--signing-key", "k", "--ttl", "soon"]],
    ["a bad server", ["subscribe", "--server", "ftp://x", "--token", "t"]],
    ["a missing CA file", ["subscribe", "--token", "t", "--ca-cert", "/nonexistent.pem"]],
    ["publish without --json", ["publish", "--api-key", "k", "--channel", "c"]],
    ["publish with bad JSON", ["publish", "--api-key", "k", "--channel", "c", "--json", "{"]],
  ];
  for (const [name, args] of cases) {
    it(`exits 2 for ${name}`, async () => {
      const c = command(args);
      assert.equal(await c.exit(), 2);
      assert.ok(c.stderr.every((l) => !l.startsWith("{")), "no JSON line for bad arguments");
      assert.equal(c.stdout.filter((l) => l !== "").length, 0);
    });
  }
});
