/**
 * A per-mailbox sliding-window limit on sends (Exchange Online allows 30 messages a minute per
 * mailbox). Pure and clock-free: callers pass `now`, tests pass a fake one.
 *
 * A sliding window rather than a token bucket: a bucket refilled at 0.5/s still lets a burst of
 * 30 follow a quiet minute *and* 30 more in the next 60 s, which is exactly what Exchange counts
 * and refuses (4.3.2 / 554 5.2.0 "submission quota exceeded").
 */
export class SendRateLimiter {
  readonly #sent = new Map<string, number[]>();

  constructor(
    private readonly perMinute: (key: string) => number,
    private readonly windowMs = 60_000,
  ) {}

  /**
   * Takes a slot for `key` at `now` and returns 0, or returns how many ms to wait until a slot
   * frees up (nothing is taken then).
   */
  take(key: string, now: number): number {
    const limit = this.perMinute(key);
    const times = (this.#sent.get(key) ?? []).filter((t) => t > now - this.windowMs);
    if (times.length >= limit) {
      this.#sent.set(key, times);
      return times[times.length - limit]! + this.windowMs - now;
    }
    times.push(now);
    this.#sent.set(key, times);
    return 0;
  }

  /** Gives back the slot taken at `at` (the send did not reach the server, so it does not count). */
  release(key: string, at: number): void {
    const times = this.#sent.get(key);
    const i = times?.lastIndexOf(at) ?? -1;
    if (times && i >= 0) times.splice(i, 1);
  }
}
