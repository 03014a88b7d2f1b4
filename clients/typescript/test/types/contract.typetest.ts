/**
 * Compile-time proof that typed calls check their types (`npm run typecheck`, `tsc --noEmit`):
 * each `@ts-expect-error` line must be an error, or the compile fails ("Unused directive").
 * Nothing here runs.
 */
import { createClient, decode, method, type Subscription } from "../../src/index.js";

const echo = method<{ text: string }, string>(["routerClient", "echo"], { decode: decode.string });
const ping = method<void, string>(["routerClient", "ping"], { decode: decode.string });
const sendMessage = method<{ message: string }, void>(["sendMessage"], { decode: decode.nothing });

export async function proofs(sub: Subscription): Promise<void> {
  // The right types compile, and the output has the declared type.
  const answer: string = await sub.call(echo, { text: "hi" });
  const pong: string = await sub.call(ping);
  await sub.call(sendMessage, { message: "hello" }, { retries: 1 });

  // @ts-expect-error: a number is not a string input.
  await sub.call(echo, { text: 1 });
  // @ts-expect-error: a missing field.
  await sub.call(echo, {});
  // @ts-expect-error: another method's input.
  await sub.call(echo, { message: "hello" });
  // @ts-expect-error: the input is required.
  await sub.call(echo);
  // @ts-expect-error: the output is a string, not a number.
  const wrong: number = await sub.call(echo, { text: "hi" });
  // @ts-expect-error: a method without input takes none.
  await sub.call(ping, { text: "hi" });

  const client = createClient({ baseUrl: "http://127.0.0.1:50051" });
  const credentials = sub.credentials;
  const typed: string = await client.call(credentials, echo, { text: "hi" });
  // @ts-expect-error: the same checks through the client.
  await client.call(credentials, echo, { text: 1 });

  // Items are a discriminated union.
  for await (const item of sub) {
    if (item.kind === "event") {
      const id: string = item.id;
      void id;
    } else {
      const failure = item.failure;
      void failure;
      // @ts-expect-error: a resume report has no payload.
      void item.payload;
    }
  }
  void [answer, pong, wrong, typed];
}
