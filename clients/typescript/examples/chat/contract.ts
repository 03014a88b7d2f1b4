/**
 * The chat room's contract, declared once (the TypeScript twin of examples/chat/contract.rs in
 * the repository): the demo page and the tests call it, and a call with the wrong types does
 * not compile.
 */
import { decode, method, type JsonValue } from "../../src/index.js";

/** What every member of the room receives. */
export interface ChatMessage {
  message: string;
  /** The sender's `userId` from the token's `att`, when it has one. */
  from?: string;
}

/** Publishes a message to everyone in the room but the sender. */
export const sendMessage = method<{ message: string }, void>(["sendMessage"], { decode: decode.nothing });
/** Answers `pong`. */
export const ping = method<void, string>(["routerClient", "ping"], { decode: decode.string });
/** Answers `Echo: <text>`. */
export const echo = method<{ text: string }, string>(["routerClient", "echo"], { decode: decode.string });

/** The payload of a chat event, checked. */
export function chatMessage(payload: JsonValue): ChatMessage | undefined {
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return undefined;
  const { message, from } = payload;
  if (typeof message !== "string") return undefined;
  return typeof from === "string" ? { message, from } : { message };
}
