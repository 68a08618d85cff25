/** Options for {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long (default 10 000 ms). */
  timeoutMs?: number;
  /** Pause between attempts (default 50 ms). */
  intervalMs?: number;
  /**
   * What is being waited for, in words, for the timeout message ("3 messages in the SMTP sink").
   * A function is called only on timeout, so what it quotes (a process's output, a status) is what
   * was there when the wait gave up, not when it began.
   */
  what?: string | (() => string);
}

/** Thrown by {@link waitFor} when the condition did not hold in time; `cause` is the last error. */
export class WaitForTimeoutError extends Error {
  override name = "WaitForTimeoutError";
  /** The last value the condition returned (undefined if it threw). */
  readonly lastValue: unknown;
  constructor(message: string, lastValue: unknown, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.lastValue = lastValue;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function describe(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    const text = JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v));
    return text === undefined ? String(value) : text.length > 300 ? `${text.slice(0, 300)}…` : text;
  } catch {
    return String(value);
  }
}

/**
 * Calls `fn` until it returns something other than `false`, `null` or `undefined`, and returns that.
 * A throw counts as "not yet" (a server still starting refuses connections); the last error or value
 * is quoted in the timeout message so a failing test says what it saw, not just that it waited.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<Exclude<T, false | null | undefined>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 50;
  const started = Date.now();
  let lastValue: unknown;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    try {
      const value = await fn();
      if (value !== false && value !== null && value !== undefined) {
        return value as Exclude<T, false | null | undefined>;
      }
      lastValue = value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    const elapsed = Date.now() - started;
    if (elapsed >= timeoutMs) {
      const last = lastError === undefined ? `last value ${describe(lastValue)}` : `last error ${describe(lastError)}`;
      const what = typeof options.what === "function" ? options.what() : (options.what ?? "condition");
      throw new WaitForTimeoutError(
        `Timed out after ${elapsed} ms (${attempts} attempts) waiting for ${what}; ${last}`,
        lastValue,
        lastError,
      );
    }
    await sleep(Math.min(intervalMs, Math.max(0, timeoutMs - elapsed)));
  }
}
