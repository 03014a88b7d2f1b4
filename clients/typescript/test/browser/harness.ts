/**
 * The browser side of the tests: Debian's Chromium (never a downloaded browser) driven by
 * playwright-core, and a tiny page server on another origin that serves the bundled client and
 * mints tokens like an app server. The target server is a parameter (`baseUrl`, and whether to
 * ignore certificate errors), so the same tests run over https once the server speaks TLS.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { build } from "esbuild";
import { chromium, type BrowserContext, type Page } from "playwright-core";

import { signToken } from "../../src/sign.js";
import { bounded, PACKAGE_ROOT, SIGNING_KEY } from "../helpers/server.js";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Why the browser tests cannot run here, if they cannot. */
export function missingChromium(): string | undefined {
  return existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing: apt-get install -y chromium (test.sh does)`;
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
  readonly #profile: string;

  private constructor(context: BrowserContext, page: Page, profile: string) {
    this.context = context;
    this.page = page;
    this.#profile = profile;
  }

  /**
   * Opens `pageUrl`, and waits until the page is ready: the test page sets its title to
   * "ready"; another page names a selector in `options.ready`.
   */
  static async open(pageUrl: string, options: { ignoreCertificateErrors?: boolean; ready?: string } = {}): Promise<Browser> {
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
      ...(options.ignoreCertificateErrors ? ["--ignore-certificate-errors"] : []),
    ];
    // launchPersistentContext: the fresh --user-data-dir is its first argument.
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args,
      ignoreHTTPSErrors: options.ignoreCertificateErrors ?? false,
      timeout: 60_000,
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      page.setDefaultTimeout(30_000);
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await page.goto(pageUrl);
      const ready = options.ready
        ? page.waitForSelector(options.ready, { timeout: 30_000 })
        : page.waitForFunction(() => document.title === "ready", undefined, { timeout: 30_000 });
      await ready.catch((error: unknown) => {
        throw new Error(`the page did not load: ${String(error)} ${errors.join("; ")}`);
      });
      return new Browser(context, page, profile);
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
