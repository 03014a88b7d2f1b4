/**
 * A missing prerequisite (a server binary, Chromium, TLS) skips its tests locally, saying why,
 * and fails the run under CI=true: a CI run must not pass without testing anything.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "prerequisites.js");
const CHAT_TLS_FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "chat-tls.js");

function run(ci: string | undefined, fixture = FIXTURE, extraEnv: NodeJS.ProcessEnv = {}): { status: number | null; output: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv };
  // Not a subtest of this runner: the child reports on its own.
  delete env.NODE_TEST_CONTEXT;
  if (ci === undefined) delete env.CI;
  else env.CI = ci;
  const child = spawnSync(process.execPath, ["--test", "--test-reporter=tap", fixture], { env, encoding: "utf8", timeout: 60_000 });
  return { status: child.status, output: `${child.stdout}${child.stderr}` };
}

describe("a missing prerequisite", () => {
  it("skips its tests with the reason when CI is not set", () => {
    for (const ci of [undefined, "", "false"]) {
      const { status, output } = run(ci);
      assert.equal(status, 0, output);
      assert.match(output, /# SKIP \/nonexistent\/durable-iterator does not exist: build it or set DURABLE_ITERATOR_BIN/);
      assert.match(output, /# SKIP \/nonexistent\/chat does not exist: build it or set DURABLE_ITERATOR_CHAT_BIN/);
      assert.match(output, /^# fail 0$/m);
      assert.doesNotMatch(output, /prerequisite:/);
    }
  });

  it("fails the run under CI=true, one failure per reason, and still runs the rest", () => {
    for (const ci of ["true", "1"]) {
      const { status, output } = run(ci);
      assert.equal(status, 1, output);
      assert.match(output, /^not ok \d+ - prerequisite: \/nonexistent\/durable-iterator does not exist/m);
      assert.match(output, /^\s+not ok \d+ - prerequisite: \/nonexistent\/chat does not exist/m);
      assert.match(output, /CI=true: a missing prerequisite fails the run instead of skipping its tests/);
      assert.match(output, /^# fail 2$/m);
      assert.match(output, /^\s+ok \d+ - runs$/m);
    }
  });
});

describe("a chat example that serves no TLS", () => {
  it("skips the chat tests over https, saying why, and fails them under CI=true", () => {
    const dir = mkdtempSync(join(tmpdir(), "di-ts-prereq-"));
    try {
      // What a chat binary built before DURABLE_ITERATOR_DEV_TLS holds of it: nothing.
      const bin = join(dir, "chat");
      writeFileSync(bin, "an old chat example\n".repeat(1000));
      const reason = `${bin} knows no DURABLE_ITERATOR_DEV_TLS`;
      const local = run(undefined, CHAT_TLS_FIXTURE, { DURABLE_ITERATOR_CHAT_BIN: bin });
      assert.equal(local.status, 0, local.output);
      assert.ok(local.output.includes(`# SKIP ${reason}`), local.output);
      assert.match(local.output, /^# fail 0$/m);
      const ci = run("true", CHAT_TLS_FIXTURE, { DURABLE_ITERATOR_CHAT_BIN: bin });
      assert.equal(ci.status, 1, ci.output);
      assert.ok(ci.output.includes(`prerequisite: ${reason}`), ci.output);
      assert.match(ci.output, /^# fail 1$/m);
      assert.match(ci.output, /^\s+ok \d+ - runs$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
