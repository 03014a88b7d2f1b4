/**
 * The real server binaries as child processes, for the integration and browser tests: start on
 * 127.0.0.1:0 (or a given port), read the address from the first stdout line, kill by pid.
 * Every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { skipUnlessCi } from "./prerequisites.js";

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

/**
 * Why the tests of `bin` cannot run, if they cannot (for `skip`; under `CI=true` also a failing
 * test, see prerequisites.ts).
 */
export function missingBinary(bin: string, variable: string): string | undefined {
  return skipUnlessCi(existsSync(bin) ? undefined : `${bin} does not exist: build it or set ${variable}`);
}

export interface ServerOptions {
  /** Extra `serve` arguments (`--heartbeat-seconds 1`, `--subscriber-queue 8`). */
  args?: string[];
  /** Listen on this port (a restart on the same address); default 0. */
  port?: number;
  /** The data directory (a restart on the same data); default a new temp dir. */
  dataDir?: string;
  /**
   * Serve https: `"dev"` is `serve --dev-tls` (the server makes a self-signed certificate for
   * localhost and 127.0.0.1 in the data dir, once, and prints its path); `{ cert, key }` (PEM
   * files) is `serve --tls-cert/--tls-key`.
   */
  tls?: "dev" | { cert: string; key: string };
}

/** What `serve --dev-tls` printed about its certificate. */
export interface DevCertificate {
  /** The certificate's path, from the server's stdout. */
  cert: string;
  /** Its SHA-256 fingerprint as printed (`AB:CD:…`). */
  fingerprint: string;
}

/** A running server process. */
export class RunningServer {
  readonly child: ChildProcess;
  readonly port: number;
  readonly baseUrl: string;
  readonly dataDir: string;
  readonly args: string[];
  /** The options it was started with (a restart keeps them). */
  readonly options: ServerOptions;
  /** With `tls: "dev"`: the certificate the server made and printed. */
  readonly devCertificate: DevCertificate | undefined;
  readonly #ownsDataDir: boolean;
  #stderr = "";

  constructor(
    child: ChildProcess,
    port: number,
    dataDir: string,
    ownsDataDir: boolean,
    options: ServerOptions,
    devCertificate?: DevCertificate,
  ) {
    this.child = child;
    this.port = port;
    this.baseUrl = `${options.tls ? "https" : "http"}://127.0.0.1:${port}`;
    this.dataDir = dataDir;
    this.args = options.args ?? [];
    this.options = options;
    this.devCertificate = devCertificate;
    this.#ownsDataDir = ownsDataDir;
    child.stderr?.on("data", (chunk: Buffer) => {
      // Kept (bounded) for failure messages.
      this.#stderr = (this.#stderr + chunk.toString()).slice(-20_000);
    });
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** The certificate file a client trusts to reach this https server (`--ca-cert`). */
  get caCert(): string {
    const tls = this.options.tls;
    if (tls === undefined) throw new Error(`${this.baseUrl} serves no TLS`);
    return tls === "dev" ? this.devCertificate!.cert : tls.cert;
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

/**
 * Waits (bounded) for stdout lines matching `patterns`, in that order (other lines in between
 * are passed over); resolves with their matches, or rejects with `failOn.message` at a line
 * matching `failOn.line` that is not the one awaited. Only whole lines count: a line still being
 * written is not matched by its beginning.
 */
function lines(
  child: ChildProcess,
  patterns: RegExp[],
  timeoutMs: number,
  what: string,
  failOn?: { line: RegExp; message: string },
): Promise<RegExpMatchArray[]> {
  return bounded(
    new Promise<RegExpMatchArray[]>((resolve, reject) => {
      const matches: RegExpMatchArray[] = [];
      let partial = "";
      const onData = (chunk: Buffer) => {
        const complete = (partial + chunk.toString()).split("\n");
        partial = complete.pop() ?? "";
        for (const line of complete) {
          const match = line.match(patterns[matches.length]!);
          if (!match && failOn?.line.test(line)) {
            child.stdout?.off("data", onData);
            child.stdout?.resume();
            reject(new Error(failOn.message));
            return;
          }
          if (!match) continue;
          matches.push(match);
          if (matches.length === patterns.length) {
            child.stdout?.off("data", onData);
            // Keep draining stdout: a full pipe must never block the server.
            child.stdout?.resume();
            resolve(matches);
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
  const tls = options.tls;
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
    ...(tls === "dev" ? ["--dev-tls"] : tls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : []),
    ...(options.args ?? []),
  ];
  const child = spawn(serverBin(), args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  try {
    // `--dev-tls` prints the certificate's path and fingerprint after the listening line.
    const patterns = [/^durable-iterator listening on 127\.0\.0\.1:(\d+)$/];
    if (tls === "dev") {
      patterns.push(/^TLS with a self-signed development certificate: (.+)$/, /SHA-256 fingerprint ([0-9A-F]{2}(?::[0-9A-F]{2}){31})\b/);
    }
    const [listening, certLine, fingerprintLine] = await lines(child, patterns, 20_000, "the server");
    const devCertificate = tls === "dev" ? { cert: certLine![1]!, fingerprint: fingerprintLine![1]! } : undefined;
    return new RunningServer(child, Number(listening![1]), dataDir, ownsDataDir, options, devCertificate);
  } catch (error) {
    await killChild(child, "SIGKILL");
    if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
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
      return await startServer({ ...server.options, port: server.port, dataDir: server.dataDir });
    } catch (error) {
      lastError = error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw lastError;
}

export interface ChatOptions {
  /**
   * Serve https: `DURABLE_ITERATOR_DEV_TLS=1`, the chat example's `serve --dev-tls` (a
   * self-signed certificate for localhost and 127.0.0.1, made once in the data dir and reused,
   * whose path and fingerprint it prints before its listening line).
   */
  tls?: boolean;
  /**
   * `DURABLE_ITERATOR_DATA_DIR`: the history on disk, and the TLS certificate. Default: with
   * `tls`, a new temp dir (removed by `stop`); without, none (the history in memory).
   */
  dataDir?: string;
}

/**
 * Starts the chat example (`chat:*` channels; the history in memory, or on disk in `dataDir`;
 * over https with `tls`).
 */
export async function startChat(options: ChatOptions = {}): Promise<RunningServer> {
  const tls = options.tls === true;
  const ownsDataDir = tls && options.dataDir === undefined;
  const dataDir = options.dataDir ?? (tls ? mkdtempSync(join(tmpdir(), "di-ts-chat-")) : undefined);
  // Only what this call asks for: none of the chat example's settings from the environment.
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DURABLE_ITERATOR_DEV_TLS;
  delete env.DURABLE_ITERATOR_DATA_DIR;
  const child = spawn(chatBin(), [], {
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...env,
      DURABLE_ITERATOR_SIGNING_KEY: SIGNING_KEY,
      DURABLE_ITERATOR_API_KEY: API_KEY,
      DURABLE_ITERATOR_LISTEN: "127.0.0.1:0",
      ...(dataDir !== undefined ? { DURABLE_ITERATOR_DATA_DIR: dataDir } : {}),
      ...(tls ? { DURABLE_ITERATOR_DEV_TLS: "1" } : {}),
    },
  });
  try {
    const listening = /chat server listening on 127\.0\.0\.1:(\d+)/;
    let port: number;
    let devCertificate: DevCertificate | undefined;
    if (tls) {
      // The certificate line comes before the listening one; a chat binary that serves no TLS
      // prints only the listening line: fail at once rather than at the timeout.
      const [certLine, match] = await lines(
        child,
        [/^TLS with a self-signed development certificate: (.+) \(SHA-256 ([0-9A-F]{2}(?::[0-9A-F]{2}){31})\)$/, listening],
        20_000,
        "the chat server (TLS)",
        { line: listening, message: `${chatBin()} started without TLS: it predates DURABLE_ITERATOR_DEV_TLS, rebuild it` },
      );
      port = Number(match![1]);
      devCertificate = { cert: certLine![1]!, fingerprint: certLine![2]! };
    } else {
      const [match] = await lines(child, [listening], 20_000, "the chat server");
      port = Number(match![1]);
    }
    return new RunningServer(child, port, dataDir ?? "", ownsDataDir, tls ? { tls: "dev" } : {}, devCertificate);
  } catch (error) {
    await killChild(child, "SIGKILL");
    if (ownsDataDir) rmSync(dataDir!, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Why the chat tests over https cannot run, if they cannot: the chat binary does not know
 * `DURABLE_ITERATOR_DEV_TLS` (an older build; for `skip`, under `CI=true` also a failing test).
 * Read from the binary itself (the variable's name is in it), so nothing is started.
 */
export function missingChatTls(): string | undefined {
  const bin = chatBin();
  if (!existsSync(bin)) return missingBinary(bin, "DURABLE_ITERATOR_CHAT_BIN");
  return skipUnlessCi(
    fileContains(bin, "DURABLE_ITERATOR_DEV_TLS")
      ? undefined
      : `${bin} knows no DURABLE_ITERATOR_DEV_TLS: the chat tests over https need a chat example that serves TLS (rebuild it)`,
  );
}

/** Whether the file holds `text` (read in chunks: binaries are large). */
function fileContains(path: string, text: string): boolean {
  const needle = Buffer.from(text);
  const chunk = Buffer.alloc(8 << 20);
  const fd = openSync(path, "r");
  try {
    let carry = Buffer.alloc(0);
    for (;;) {
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) return false;
      const window = Buffer.concat([carry, chunk.subarray(0, read)]);
      if (window.includes(needle)) return true;
      carry = window.subarray(Math.max(0, window.length - needle.length + 1));
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Why the https tests cannot run, if they cannot: the server binary has no `serve --dev-tls`
 * (for `skip`; under `CI=true` also a failing test).
 */
export function missingTls(): string | undefined {
  const help = spawnSync(serverBin(), ["serve", "--help"], { encoding: "utf8", timeout: 10_000 });
  const has = (help.stdout ?? "").includes("--dev-tls");
  return skipUnlessCi(has ? undefined : `${serverBin()} has no \`serve --dev-tls\`: the https tests need a server with TLS`);
}

/**
 * The server's development certificate and key, made by `serve --dev-tls` in `dir` (the server
 * is started, read and killed): for a test that needs a certificate for 127.0.0.1 of its own.
 */
export async function devCertificate(dir: string): Promise<{ cert: string; key: string; fingerprint: string }> {
  const server = await startServer({ tls: "dev", dataDir: dir });
  try {
    const { cert, fingerprint } = server.devCertificate!;
    return { cert, key: join(dirname(cert), "dev-tls-key.pem"), fingerprint };
  } finally {
    await server.kill();
  }
}

/**
 * The base64 SHA-256 of the certificate's SubjectPublicKeyInfo: what Chromium's
 * `--ignore-certificate-errors-spki-list` takes to trust that one certificate.
 */
export function spkiSha256(certPath: string): string {
  const certificate = new X509Certificate(readFileSync(certPath));
  const spki = certificate.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}
