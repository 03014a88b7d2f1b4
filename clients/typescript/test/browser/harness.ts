/**
 * The browser side of the tests: Debian's Chromium (never a downloaded browser) driven by
 * playwright-core, and a tiny page server on another origin that serves the bundled client and
 * mints tokens like an app server. The target server is a parameter (`baseUrl`, and the
 * certificates to trust), so the same tests run over http and https.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { build } from "esbuild";
import { chromium, type BrowserContext, type CDPSession, type Page } from "playwright-core";

import { signToken } from "../../src/sign.js";
import { skipUnlessCi } from "../helpers/prerequisites.js";
import { bounded, PACKAGE_ROOT, SIGNING_KEY, spkiSha256 } from "../helpers/server.js";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Why the browser tests cannot run here, if they cannot (under `CI=true` also a failing test). */
export function missingChromium(): string | undefined {
  return skipUnlessCi(existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing: apt-get install -y chromium (test.sh does)`);
}

/** A response as Chromium's network stack saw it (DevTools `Network.responseReceived`). */
export interface SeenResponse {
  url: string;
  /** DevTools' resource type: `Fetch`, `Preflight` (CORS), `Document`, … */
  type: string;
  status: number;
  /** The protocol Chromium spoke: `h2`, `http/1.1`. */
  protocol: string | undefined;
  /** Chromium's id of the connection it came on. */
  connectionId: number;
}

/** The page's script, bundled from test/browser/page.ts (and through it src/). */
export async function bundle(): Promise<string> {
  const result = await build({
    entryPoints: [join(PACKAGE_ROOT, "test/browser/page.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  return result.outputFiles[0]!.text;
}

/** The page's origin: `/` the test page, `/page.js` the bundle, `/token?chn=..&rpc=..&att=..&ttl=..` a token. */
export class PageServer {
  readonly server: Server;
  url = "";
  tokensIssued = 0;

  constructor(script: string) {
    this.server = createServer((request, response) => {
      const url = new URL(request.url ?? "/", "http://page");
      if (url.pathname === "/") {
        response.setHeader("content-type", "text/html");
        response.end('<!doctype html><title>loading</title><script type="module" src="/page.js"></script>');
      } else if (url.pathname === "/page.js") {
        response.setHeader("content-type", "text/javascript");
        response.end(script);
      } else if (url.pathname === "/token") {
        this.tokensIssued += 1;
        const now = Math.floor(Date.now() / 1000);
        const att = url.searchParams.get("att");
        const rpc = url.searchParams.get("rpc");
        response.end(
          signToken(SIGNING_KEY, {
            chn: url.searchParams.get("chn") ?? "lobby",
            att: att ? JSON.parse(att) : undefined,
            rpc: rpc ? rpc.split(",") : undefined,
            iat: now,
            exp: now + Number(url.searchParams.get("ttl") ?? 3600),
          }),
        );
      } else {
        response.statusCode = 404;
        response.end();
      }
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}/`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Chromium with a fresh profile, and the page loaded from the page server. */
export class Browser {
  readonly context: BrowserContext;
  readonly page: Page;
  /** With `recordResponses`: every response the page received, in order. */
  readonly responses: SeenResponse[];
  readonly #profile: string;

  private constructor(context: BrowserContext, page: Page, profile: string, responses: SeenResponse[]) {
    this.context = context;
    this.page = page;
    this.responses = responses;
    this.#profile = profile;
  }

  /**
   * Opens `pageUrl`, and waits until the page is ready: the test page sets its title to
   * "ready"; another page names a selector in `options.ready`.
   *
   * `trust`: certificate files (PEM) Chromium accepts although no CA it knows signed them: by
   * their public key's SHA-256 (`--ignore-certificate-errors-spki-list`), so any other bad
   * certificate is still refused. `recordResponses`: keep what Chromium says of each response
   * (protocol, connection) in `responses`, through DevTools.
   */
  static async open(pageUrl: string, options: { trust?: string[]; recordResponses?: boolean; ready?: string } = {}): Promise<Browser> {
    const profile = mkdtempSync(join(tmpdir(), "di-ts-chromium-"));
    const args = [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Honoured only with a --user-data-dir, which launchPersistentContext gives.
      ...(options.trust?.length ? [`--ignore-certificate-errors-spki-list=${options.trust.map(spkiSha256).join(",")}`] : []),
    ];
    // launchPersistentContext: the fresh --user-data-dir is its first argument.
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args,
      // Never playwright's blanket acceptance: only the certificates in `trust`.
      ignoreHTTPSErrors: false,
      timeout: 60_000,
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      page.setDefaultTimeout(30_000);
      const responses: SeenResponse[] = [];
      if (options.recordResponses) await record(await context.newCDPSession(page), responses);
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await page.goto(pageUrl);
      const ready = options.ready
        ? page.waitForSelector(options.ready, { timeout: 30_000 })
        : page.waitForFunction(() => document.title === "ready", undefined, { timeout: 30_000 });
      await ready.catch((error: unknown) => {
        throw new Error(`the page did not load: ${String(error)} ${errors.join("; ")}`);
      });
      return new Browser(context, page, profile, responses);
    } catch (error) {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
      throw error;
    }
  }

  async close(): Promise<void> {
    await bounded(this.context.close(), 30_000, "Chromium to close").catch(() => {});
    rmSync(this.#profile, { recursive: true, force: true });
  }
}

/** Appends each response of the page's DevTools session to `into`. */
async function record(cdp: CDPSession, into: SeenResponse[]): Promise<void> {
  cdp.on("Network.responseReceived", ({ type, response }) => {
    into.push({ url: response.url, type, status: response.status, protocol: response.protocol, connectionId: response.connectionId });
  });
  await cdp.send("Network.enable");
}
