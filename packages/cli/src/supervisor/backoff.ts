/** How long the supervisor waits before restarting a service that exited. */
export interface BackoffOptions {
  /** Delay before the first restart, in milliseconds. */
  initialMs: number;
  /** Upper bound for any delay, in milliseconds. */
  maxMs: number;
  /** Growth per consecutive failure. */
  factor: number;
  /** Fraction of the delay that is randomised (0 = none, 0.2 = ±20 %), so restarts do not line up. */
  jitter: number;
}

export const defaultBackoff: BackoffOptions = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

/**
 * Delay before restart number `attempt` (1-based) after consecutive failures.
 * Pure: `random` is passed in so tests can pin it.
 */
export function restartDelay(attempt: number, options: BackoffOptions = defaultBackoff, random: () => number = Math.random): number {
  const exponent = Math.max(0, attempt - 1);
  const base = Math.min(options.maxMs, options.initialMs * options.factor ** exponent);
  const spread = base * options.jitter * (random() * 2 - 1);
  return Math.max(0, Math.min(options.maxMs, Math.round(base + spread)));
}
