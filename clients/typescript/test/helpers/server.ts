/**
 * The real server binaries as child processes, for the integration and browser tests: start on
 * 127.0.0.1:0 (or a given port), read the address from the first stdout line, kill by pid.
 * Every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** clients/typescript (this file is dist/test/helpers/server.js once built). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
/** The repository root. */
export const REPO_ROOT = resolve(PACKAGE_ROOT, "../..");

export const SIGNING_KEY = "ts-test-signing-key";
export const API_KEY = "ts-test-api-key";

/** The server binary: `DURABLE_ITERATOR_BIN`, else `<repo>/target/debug/durable-iterator`. */
export function serverBin(): string {
  return process.env.DURABLE_ITERATOR_BIN ?? join(REPO_ROOT, "target/debug/durable-iterator");
}

/** The chat example: `DURABLE_ITERATOR_CHAT_BIN`, else `<repo>/target/debug/examples/chat`. */
export function chatBin(): string {
  return process.env.DURABLE_ITERATOR_CHAT_BIN ?? join(REPO_ROOT, "target/debug/examples/chat");
}

/** Why the tests of `bin` cannot run, if they cannot (for `skip`). */
export function missingBinary(bin: string, variable: string): string | undefined {
  return existsSync(bin) ? undefined : `${bin} does not exist: build it or set ${variable}`;
}

export interface ServerOptions {
  /** Extra `serve` arguments (`--heartbeat-seconds 1`, `--subscriber-queue 8`). */
  args?: string[];
  /** Listen on this port (a restart on the same address); default 0. */
  port?: number;
  /** The data directory (a restart on the same data); default a new temp dir. */
  dataDir?: string;
  /** Serve https with this certificate and key (PEM files): `serve --tls-cert/--tls-key`. */
  tls?: { cert: string; key: string };
}

/** A running server process. */
export class RunningServer {
  readonly child: ChildProcess;
  readonly port: number;
  readonly baseUrl: string;
  readonly dataDir: string;
  readonly args: string[];
  readonly #ownsDataDir: boolean;
  #stderr = "";

  constructor(child: ChildProcess, port: number, dataDir: string, ownsDataDir: boolean, args: string[], scheme = "http") {
    this.child = child;
    this.port = port;
    this.baseUrl = `${scheme}://127.0.0.1:${port}`;
    this.dataDir = dataDir;
    this.args = args;
    this.#ownsDataDir = ownsDataDir;
    child.stderr?.on("data", (chunk: Buffer) => {
      // Kept (bounded) for failure messages.
      this.#stderr = (this.#stderr + chunk.toString()).slice(-20_000);
    });
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** kill -9, and wait (bounded) until the process is gone. */
  async kill(): Promise<void> {
    await killChild(this.child, "SIGKILL");
  }

  /** kill -9, then remove the data dir if this helper made it. */
  async stop(): Promise<void> {
    await this.kill();
    if (this.#ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Sends `signal` to the child by pid and waits at most `timeoutMs` for it to exit. */
export async function killChild(child: ChildProcess, signal: NodeJS.Signals, timeoutMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  if (child.pid !== undefined) {
    try {
      process.kill(child.pid, signal);
    } catch {
      // Already gone.
    }
  }
  await bounded(exited, timeoutMs, `process ${child.pid} to exit after ${signal}`);
}

/** `promise`, or a rejection naming `what` after `ms`. The timer never outlives the wait. */
export async function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (bounded) for the child's first stdout line matching `pattern`. */
function firstLine(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<RegExpMatchArray> {
  return bounded(
    new Promise<RegExpMatchArray>((resolve, reject) => {
      let buffer = "";
      const onData = (chunk: Buffer) => {
        buffer += chunk.toString();
        for (const line of buffer.split("\n")) {
          const match = line.match(pattern);
          if (match) {
            child.stdout?.off("data", onData);
            resolve(match);
            return;
          }
        }
      };
      child.stdout?.on("data", onData);
      child.once("exit", (code, signal) => reject(new Error(`${what} exited (${code ?? signal}) before listening`)));
    }),
    timeoutMs,
    what,
  );
}

/** Starts `durable-iterator serve` as the tests run it. */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "di-ts-"));
  const args = [
    "serve",
    "--listen",
    `127.0.0.1:${options.port ?? 0}`,
    "--data-dir",
    dataDir,
    "--signing-key",
    SIGNING_KEY,
    "--api-key",
    API_KEY,
    "--retention-seconds",
    "3600",
    "--shutdown-grace-seconds",
    "5",
    ...(options.tls ? ["--tls-cert", options.tls.cert, "--tls-key", options.tls.key] : []),
    ...(options.args ?? []),
  ];
  const child = spawn(serverBin(), args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  try {
    const match = await firstLine(child, /^durable-iterator listening on 127\.0\.0\.1:(\d+)/, 20_000, "the server");
    return new RunningServer(child, Number(match[1]), dataDir, ownsDataDir, options.args ?? [], options.tls ? "https" : "http");
  } catch (error) {
    await killChild(child, "SIGKILL");
    throw error;
  }
}

/** Starts the server again on the same port and data directory (after a kill). */
export async function restart(server: RunningServer): Promise<RunningServer> {
  // The port was just freed; the server binds with SO_REUSEADDR, but a bind can still race
  // the kernel's cleanup of the old socket: a few bounded tries.
  let lastError: unknown;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      return await startServer({ port: server.port, dataDir: server.dataDir, args: server.args });
    } catch (error) {
      lastError = error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw lastError;
}

/** Starts the chat example (memory store, `chat:*` channels). */
export async function startChat(): Promise<RunningServer> {
  const child = spawn(chatBin(), [], {
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      DURABLE_ITERATOR_SIGNING_KEY: SIGNING_KEY,
      DURABLE_ITERATOR_API_KEY: API_KEY,
      DURABLE_ITERATOR_LISTEN: "127.0.0.1:0",
    },
  });
  try {
    const match = await firstLine(child, /chat server listening on 127\.0\.0\.1:(\d+)/, 20_000, "the chat server");
    return new RunningServer(child, Number(match[1]), "", false, []);
  } catch (error) {
    await killChild(child, "SIGKILL");
    throw error;
  }
}

/** Whether the server binary has `serve --tls-cert` (TLS, HTTP/2 for browsers). */
export function serverHasTls(): boolean {
  const help = spawnSync(serverBin(), ["serve", "--help"], { encoding: "utf8", timeout: 10_000 });
  return (help.stdout ?? "").includes("--tls-cert");
}

/**
 * A self-signed certificate for 127.0.0.1 (openssl), in `dir`; undefined without openssl.
 * For the https tests, which trust it by ignoring certificate errors.
 */
export function makeCertificate(dir: string): { cert: string; key: string } | undefined {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const made = spawnSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
      "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
    { encoding: "utf8", timeout: 30_000 },
  );
  return made.status === 0 ? { cert, key } : undefined;
}
