/**
 * Contract first: a channel object's methods declared once, as typed descriptors, so that a
 * call with the wrong input or output type does not compile.
 *
 * ```ts
 * export const echo = method<{ text: string }, string>(["routerClient", "echo"], {
 *   decode: (output) => { if (typeof output !== "string") throw new TypeError("not a string"); return output; },
 * });
 * const answer: string = await sub.call(echo, { text: "hi" });
 * ```
 *
 * On the wire inputs and outputs are JSON values, so the server side needs no TypeScript.
 *
 * @module
 */
import type { JsonValue } from "./json.js";

/** A method of a channel object, reachable at `path`, taking `I` and answering `O`. */
export interface Method<I, O> {
  /** The method's path, e.g. `["routerClient", "echo"]`; `path[0]` is what a token's `rpc` allows. */
  readonly path: readonly string[];
  /**
   * Checks (and may convert) the output received. A throw becomes a `DecodeError`. Without it
   * the output is taken as `O` unchecked: TypeScript types do not exist at run time.
   */
  readonly decode: ((output: JsonValue) => O) | undefined;
  /**
   * Carries the types only (never set): `I` in a parameter position makes a method of another
   * input type unassignable, so `call(echo, { text: 1 })` does not compile.
   */
  readonly types?: { readonly input: (input: I) => void; readonly output: () => O };
}

/**
 * Declares the method at `path` with input type `I` (`void` for none) and output type `O`.
 * Give `decode` to check outputs at run time.
 */
export function method<I = void, O = JsonValue>(
  path: readonly string[],
  options: { decode?: (output: JsonValue) => O } = {},
): Method<I, O> {
  if (path.length === 0) throw new RangeError("a method path has at least one element");
  return { path: Object.freeze([...path]), decode: options.decode };
}

/** Decoders for common output types, for `method(path, { decode })`. */
export const decode = {
  /** A string, or a `TypeError`. */
  string(output: JsonValue): string {
    if (typeof output !== "string") throw new TypeError(`expected a string, got ${kindOf(output)}`);
    return output;
  },
  /** A number, or a `TypeError`. */
  number(output: JsonValue): number {
    if (typeof output !== "number") throw new TypeError(`expected a number, got ${kindOf(output)}`);
    return output;
  },
  /** A boolean, or a `TypeError`. */
  boolean(output: JsonValue): boolean {
    if (typeof output !== "boolean") throw new TypeError(`expected a boolean, got ${kindOf(output)}`);
    return output;
  },
  /** `null` (a method without output), as `void`, or a `TypeError`. */
  nothing(output: JsonValue): void {
    if (output !== null) throw new TypeError(`expected null, got ${kindOf(output)}`);
  },
};

function kindOf(value: JsonValue): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/** The input argument of a call: optional for a method whose input type is `void`. */
export type InputArgs<I> = [I] extends [void] ? [input?: undefined] : [input: I];

/** The dotted name of a method path, for error messages (`routerClient.echo`). */
export function methodName(path: readonly string[]): string {
  return path.join(".");
}
