/** A mailbox's limits per window: messages, and recipients across those messages. */
export interface SendLimits {
  messages: number;
  /** Recipients (envelope addresses) across the window's messages; absent: not limited. */
  recipients?: number;
}

/**
 * A per-mailbox sliding-window limit on sends (Exchange Online allows 30 messages a minute per
 * mailbox), counting messages and, beside them, recipients: a forward to 500 addresses is one
 * message but 500 deliveries, and what providers throttle (and what a spammer with an agent's
 * password would want) is the deliveries. Pure and clock-free: callers pass `now`, tests pass a
 * fake one.
 *
 * A sliding window rather than a token bucket: a bucket refilled at 0.5/s still lets a burst of
 * 30 follow a quiet minute *and* 30 more in the next 60 s, which is exactly what Exchange counts
 * and refuses (4.3.2 / 554 5.2.0 "submission quota exceeded").
 */
export class SendRateLimiter {
  readonly #sent = new Map<string, { at: number; recipients: number }[]>();

  constructor(
    private readonly limits: (key: string) => number | SendLimits,
    private readonly windowMs = 60_000,
  ) {}

  /**
   * Takes a slot for one message to `recipients` addresses for `key` at `now` and returns 0, or
   * returns how many ms to wait until there is room (nothing is taken then). A message with more
   * recipients than the whole window allows goes when the window is empty, so it is never held
   * for ever (the per-message cap, smtp.maxRecipients, is what refuses those).
   */
  take(key: string, now: number, recipients = 1): number {
    const l = this.limits(key);
    const { messages, recipients: maxRecipients } = typeof l === "number" ? { messages: l, recipients: undefined } : l;
    const sent = (this.#sent.get(key) ?? []).filter((s) => s.at > now - this.windowMs);
    this.#sent.set(key, sent);
    let waitMs = 0;
    if (sent.length >= messages) waitMs = sent[sent.length - messages]!.at + this.windowMs - now;
    if (maxRecipients !== undefined && sent.length > 0) {
      // The oldest sends must leave the window until this one's recipients fit beside the rest.
      let inWindow = sent.reduce((n, s) => n + s.recipients, 0);
      for (const s of sent) {
        if (inWindow + recipients <= maxRecipients) break;
        inWindow -= s.recipients;
        waitMs = Math.max(waitMs, s.at + this.windowMs - now);
      }
    }
    if (waitMs > 0) return waitMs;
    sent.push({ at: now, recipients });
    return 0;
  }

  /** Gives back the slot taken at `at` (the send did not reach the server, so it does not count). */
  release(key: string, at: number): void {
    const sent = this.#sent.get(key);
    const i = sent?.map((s) => s.at).lastIndexOf(at) ?? -1;
    if (sent && i >= 0) sent.splice(i, 1);
  }
}
