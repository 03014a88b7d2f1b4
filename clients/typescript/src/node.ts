/**
 * What only Node can do: mint tokens with the signing key, and reach an `https://` server whose
 * certificate a private CA signed. Import from `@durable-iterator/client/node`; the main entry
 * stays free of Node modules for browser bundles.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";

export { firstKey, signToken, signingProvider, type SigningProviderOptions } from "./sign.js";

/**
 * A `fetch` that trusts the CA certificate(s) in the PEM file at `caCertPath` besides the system
 * roots, for `createClient({ baseUrl: "https://...", fetch })`. It uses undici's own `fetch` and
 * `Agent` (Node's global `fetch` takes no CA option). Setting `NODE_EXTRA_CA_CERTS=<file>` before
 * Node starts does the same for the global `fetch`, without this.
 */
export async function fetchWithCa(caCertPath: string): Promise<typeof globalThis.fetch> {
  const pem = readFileSync(caCertPath, "utf8");
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new TypeError(`${caCertPath} holds no PEM certificate`);
  }
  const undici = await import("undici");
  const dispatcher = new undici.Agent({ connect: { ca: [...rootCertificates, pem] } });
  const fetchFn = (input: Parameters<typeof globalThis.fetch>[0], init?: RequestInit) =>
    undici.fetch(input as never, { ...(init as object), dispatcher } as never);
  return fetchFn as unknown as typeof globalThis.fetch;
}
