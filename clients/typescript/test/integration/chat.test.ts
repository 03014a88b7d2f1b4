/**
 * Typed method calls against the chat example server (DURABLE_ITERATOR_CHAT_BIN): the contract
 * of examples/chat/contract.ts, over grpc-web in Node.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import { Code } from "@connectrpc/connect";

import { chatMessage, echo, ping, sendMessage } from "../../examples/chat/contract.js";
import { createClient } from "../../src/client.js";
import { method } from "../../src/contract.js";
import { StatusError } from "../../src/errors.js";
import { signingProvider } from "../../src/sign.js";
import { Reader, untilProgress } from "../helpers/reader.js";
import { chatBin, missingBinary, SIGNING_KEY, startChat, type RunningServer } from "../helpers/server.js";

const skip = missingBinary(chatBin(), "DURABLE_ITERATOR_CHAT_BIN");

let server: RunningServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

function member(userId: string, rpc = ["routerClient", "sendMessage"]) {
  return signingProvider({ signingKey: SIGNING_KEY, channel: "chat:1", att: { userId }, rpc });
}

describe("against the chat example", { skip }, () => {
  it("calls typed methods as the subscription's session", async () => {
    server = await startChat();
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: member("bob") });
    const first = sub.next();
    const echoed: string = await sub.call(echo, { text: "hi" });
    assert.equal(echoed, "Echo: hi");
    assert.equal(await sub.call(ping), "pong");
    assert.equal(await sub.invoke(["routerClient", "echo"], { text: "untyped" }), "Echo: untyped");
    sub.close();
    assert.deepEqual(await first, { done: true, value: undefined });
  });

  it("sendMessage reaches everyone but the sender", async () => {
    server = await startChat();
    const client = createClient({ baseUrl: server.baseUrl });
    const alice = client.subscribe({ getToken: member("alice") });
    const bob = client.subscribe({ getToken: member("bob") });
    const [a, b] = [new Reader(alice), new Reader(bob)];
    await untilProgress(alice, () => alice.progress.state.kind === "live", "alice live");
    await untilProgress(bob, () => bob.progress.state.kind === "live", "bob live");
    await alice.call(sendMessage, { message: "hello bob" });
    await bob.call(sendMessage, { message: "hello alice" });
    await b.untilEvents(1);
    await a.untilEvents(1);
    assert.deepEqual(b.events.map((e) => chatMessage(e.payload)), [{ message: "hello bob", from: "alice" }]);
    assert.deepEqual(a.events.map((e) => chatMessage(e.payload)), [{ message: "hello alice", from: "bob" }]);
    alice.close();
    bob.close();
  });

  it("refuses what the token does not allow, an unknown path, and bad input, with their codes", async () => {
    server = await startChat();
    const client = createClient({ baseUrl: server.baseUrl });
    const sub = client.subscribe({ getToken: member("eve", ["routerClient"]) });
    const code = async (call: Promise<unknown>) => {
      try {
        await call;
      } catch (error) {
        assert.ok(error instanceof StatusError, String(error));
        return error.code;
      }
      assert.fail("expected a refusal");
    };
    assert.equal(await code(sub.call(sendMessage, { message: "x" })), Code.PermissionDenied);
    assert.equal(await code(sub.call(method<void, string>(["routerClient", "nope"]))), Code.NotFound);
    const loose = method<{ text: number }, string>(["routerClient", "echo"]);
    assert.equal(await code(sub.call(loose, { text: 1 })), Code.InvalidArgument);
    sub.close();
  });
});
