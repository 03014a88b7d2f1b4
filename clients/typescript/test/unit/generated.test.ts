/**
 * The generated code is committed (src/gen/): the package builds and installs without running
 * buf. This test regenerates it from ../../proto into a temp dir and fails while the committed
 * copy is stale (fix: `npm run generate`).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { describe, it } from "node:test";

import { PACKAGE_ROOT } from "../helpers/server.js";

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

describe("generated code", () => {
  it("is what buf generates from the contract now", () => {
    const out = mkdtempSync(join(tmpdir(), "di-ts-gen-"));
    try {
      const bin = join(PACKAGE_ROOT, "node_modules", ".bin");
      const run = spawnSync(join(bin, "buf"), ["generate", "--template", "buf.gen.yaml", "--output", out], {
        cwd: PACKAGE_ROOT,
        encoding: "utf8",
        timeout: 120_000,
        env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
      });
      assert.equal(run.status, 0, `buf generate failed: ${run.stderr}`);
      const committed = join(PACKAGE_ROOT, "src", "gen");
      const fresh = join(out, "src", "gen");
      const names = (dir: string) => files(dir).map((f) => relative(dir, f)).sort();
      assert.deepEqual(names(fresh), names(committed), "the same files");
      for (const name of names(fresh)) {
        assert.equal(
          readFileSync(join(committed, name), "utf8"),
          readFileSync(join(fresh, name), "utf8"),
          `src/gen/${name} is stale: run \`npm run generate\``,
        );
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
