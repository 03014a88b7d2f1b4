/**
 * `durable-iterator-ts`: the command line of the TypeScript client (Node), the contract of
 * clients/README.md that `conformance/` drives.
 *
 *     durable-iterator-ts subscribe --channel lobby        # one JSON line per event on stdout
 *     durable-iterator-ts publish --channel lobby --json '{"text":"hello"}'
 *
 * stdout carries only events (`{"id","payload","published_at_ms"}`, one per line); stderr
 * carries `{"connected":…}`, `{"resume":…}`, `{"refreshed":…}` and `{"error":…}` lines, and
 * logs, which never start with `{`. Exit status: 0 after SIGINT/SIGTERM, 1 after a failure,
 * 2 for bad arguments.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

import { createAdmin } from "./admin.js";
import { createClient } from "./client.js";
import { ClientError, InvalidEndpointError, StatusError } from "./errors.js";
import { eventToJson, reportToJson } from "./items.js";
import { fetchWithCa } from "./node.js";
import { codeName } from "./policy.js";
import { signingProvider, firstKey } from "./sign.js";
import type { Progress } from "./subscription.js";
import { fixedToken, tokenFromUrl, type TokenProvider } from "./token.js";

/** Where the command writes, and what it reads: the process's, or a test's. */
export interface Io {
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  env: Record<string, string | undefined>;
  /** Registers what to do on SIGINT/SIGTERM; returns the function that unregisters it. */
  onSignal: (stop: () => void) => () => void;
}

const DEFAULT_SERVER = "http://127.0.0.1:50051";

const USAGE = `usage:
  durable-iterator-ts subscribe [--server URL] (--token TOKEN | --token-url URL | --channel NAME [--tags a,b] [--ttl SECONDS] [--signing-key KEY])
                                [--refresh-before-expiry SECONDS] [--from ID] [--session-ticket TICKET] [--ca-cert FILE]
  durable-iterator-ts publish [--server URL] [--api-key KEY] --channel NAME --json JSON [--tags a,b] [--targets s1,s2] [--exclude s1,s2] [--ca-cert FILE]

environment: DURABLE_ITERATOR_SERVER (default ${DEFAULT_SERVER}), DURABLE_ITERATOR_TOKEN,
DURABLE_ITERATOR_SIGNING_KEY (first key of a comma list), DURABLE_ITERATOR_API_KEY,
DURABLE_ITERATOR_LOG=debug (more log lines on stderr).`;

/** A bad argument: exit status 2. */
class UsageError extends Error {}

const SUBSCRIBE_OPTIONS = {
  server: { type: "string" },
  token: { type: "string" },
  "token-url": { type: "string" },
  channel: { type: "string" },
  tags: { type: "string", multiple: true },
  ttl: { type: "string" },
  "signing-key": { type: "string" },
  "refresh-before-expiry": { type: "string" },
  from: { type: "string" },
  "session-ticket": { type: "string" },
  "ca-cert": { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

const PUBLISH_OPTIONS = {
  server: { type: "string" },
  "api-key": { type: "string" },
  channel: { type: "string" },
  json: { type: "string" },
  tags: { type: "string", multiple: true },
  targets: { type: "string", multiple: true },
  exclude: { type: "string", multiple: true },
  "ca-cert": { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

/** Runs the command line; resolves with the exit status. */
export async function main(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "subscribe":
        return await subscribe(rest, io);
      case "publish":
        return await publish(rest, io);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        io.stderr(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (error) {
    if (error instanceof UsageError || error instanceof InvalidEndpointError || isParseError(error)) {
      io.stderr(`error: ${(error as Error).message}\n${USAGE}`);
      return 2;
    }
    io.stderr(`error: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

function parse<T extends NonNullable<ParseArgsConfig["options"]>>(args: readonly string[], options: T) {
  return parseArgs({ args: [...args], options, strict: true, allowPositionals: false }).values;
}

/** `--tags a,b --tags c` as `["a", "b", "c"]`; `--tags ''` as `[]` (nobody). */
function list(values: string[] | undefined): string[] | undefined {
  if (values === undefined) return undefined;
  return values.flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== "");
}

function seconds(value: string | undefined, name: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min) {
    throw new UsageError(`--${name} must be a number of seconds >= ${min}, not ${JSON.stringify(value)}`);
  }
  return n;
}

async function transportFetch(caCert: string | undefined): Promise<typeof globalThis.fetch | undefined> {
  if (caCert === undefined) return undefined;
  try {
    return await fetchWithCa(caCert);
  } catch (error) {
    throw new UsageError(`--ca-cert ${caCert}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function subscribe(args: readonly string[], io: Io): Promise<number> {
  const opts = parse(args, SUBSCRIBE_OPTIONS);
  if (opts.help) {
    io.stderr(USAGE);
    return 0;
  }
  const server = opts.server ?? io.env.DURABLE_ITERATOR_SERVER ?? DEFAULT_SERVER;
  const fetch = await transportFetch(opts["ca-cert"]);
  const given = [opts.token !== undefined && "--token", opts["token-url"] !== undefined && "--token-url", opts.channel !== undefined && "--channel"].filter(Boolean);
  if (given.length > 1) throw new UsageError(`${given.join(" and ")} exclude each other`);
  if (opts.channel === undefined && (opts.tags !== undefined || opts.ttl !== undefined)) {
    throw new UsageError("--tags and --ttl need --channel (they describe the tokens it mints)");
  }
  let getToken: TokenProvider;
  let refreshBeforeExpirySeconds = seconds(opts["refresh-before-expiry"], "refresh-before-expiry", 0);
  if (opts.channel !== undefined) {
    const keys = opts["signing-key"] ?? io.env.DURABLE_ITERATOR_SIGNING_KEY;
    if (keys === undefined || keys.trim() === "") {
      throw new UsageError("--channel mints tokens: pass --signing-key or set DURABLE_ITERATOR_SIGNING_KEY (or give --token / --token-url)");
    }
    // At least 2 s, as the Rust command has it: a token must outlive its own refresh.
    const ttl = Math.max(2, Math.floor(seconds(opts.ttl, "ttl", 1) ?? 3_600));
    getToken = signingProvider({ signingKey: firstKey(keys), channel: opts.channel, tags: list(opts.tags), ttlSeconds: ttl });
    // Refreshed a quarter of its life (1 s .. 5 min) before it expires.
    refreshBeforeExpirySeconds ??= Math.min(300, Math.max(1, Math.floor(ttl / 4)));
  } else if (opts["token-url"] !== undefined) {
    getToken = tokenFromUrl(opts["token-url"], fetch ? { fetch } : {});
  } else {
    const token = opts.token ?? io.env.DURABLE_ITERATOR_TOKEN;
    if (token === undefined || token === "") throw new UsageError("give --token, --token-url or --channel");
    getToken = fixedToken(token);
  }

  const debug = io.env.DURABLE_ITERATOR_LOG === "debug";
  const client = createClient({ baseUrl: server, fetch });
  const sub = client.subscribe({
    getToken,
    lastEventId: opts.from,
    sessionTicket: opts["session-ticket"],
    refreshBeforeExpirySeconds,
    log: (level, message) => {
      if (level === "warn" || debug) io.stderr(`${level}: ${message}`);
    },
  });
  let seen: Progress = sub.progress;
  sub.onProgress((progress) => {
    if (progress.connections > seen.connections) {
      line(io.stderr, {
        connected: {
          session_id: progress.sessionId ?? null,
          session_ticket: sub.credentials.sessionTicket ?? null,
          connections: progress.connections,
        },
      });
    }
    if (progress.refreshes > seen.refreshes) line(io.stderr, { refreshed: { refreshes: progress.refreshes } });
    seen = progress;
  });
  const unregister = io.onSignal(() => sub.close());
  try {
    for await (const item of sub) {
      if (item.kind === "event") line(io.stdout, eventToJson(item));
      else line(io.stderr, reportToJson(item));
    }
    return 0;
  } catch (error) {
    const code = error instanceof ClientError && error.code !== undefined ? codeName(error.code) : null;
    const message = error instanceof StatusError ? error.rawMessage : error instanceof Error ? error.message : String(error);
    line(io.stderr, { error: { code, message } });
    return 1;
  } finally {
    unregister();
    sub.close();
  }
}

async function publish(args: readonly string[], io: Io): Promise<number> {
  const opts = parse(args, PUBLISH_OPTIONS);
  if (opts.help) {
    io.stderr(USAGE);
    return 0;
  }
  const server = opts.server ?? io.env.DURABLE_ITERATOR_SERVER ?? DEFAULT_SERVER;
  const apiKey = opts["api-key"] ?? io.env.DURABLE_ITERATOR_API_KEY;
  if (apiKey === undefined || apiKey === "") throw new UsageError("pass --api-key or set DURABLE_ITERATOR_API_KEY");
  if (opts.channel === undefined) throw new UsageError("--channel is required");
  if (opts.json === undefined) throw new UsageError("--json is required");
  let payload: unknown;
  try {
    payload = JSON.parse(opts.json);
  } catch (error) {
    throw new UsageError(`--json is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  const fetch = await transportFetch(opts["ca-cert"]);
  const admin = createAdmin({ baseUrl: server, apiKey, fetch });
  const id = await admin.publish({
    channel: opts.channel,
    payload,
    tags: list(opts.tags),
    targets: list(opts.targets),
    exclude: list(opts.exclude),
  });
  io.stdout(id);
  return 0;
}

function line(write: (line: string) => void, value: unknown): void {
  write(JSON.stringify(value));
}

function isParseError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}

/** The process's own streams, environment and signals. */
export function processIo(): Io {
  return {
    stdout: (text) => process.stdout.write(`${text}\n`),
    stderr: (text) => process.stderr.write(`${text}\n`),
    env: process.env,
    onSignal: (stop) => {
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
      return () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
      };
    },
  };
}

/** Runs `main` as the process: waits for stdout and stderr to drain, then exits. */
export async function run(argv: readonly string[]): Promise<never> {
  // Events that cannot be written (a reader that went away) end the subscription: a failure.
  process.stdout.on("error", (error: Error) => {
    process.stderr.write(`${JSON.stringify({ error: { code: null, message: `cannot write the output: ${error.message}` } })}\n`);
    process.exit(1);
  });
  const status = await main(argv);
  await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
  await new Promise<void>((resolve) => process.stderr.write("", () => resolve()));
  // Exit now: keep-alive sockets of fetch would otherwise hold the process a few seconds.
  process.exit(status);
}
