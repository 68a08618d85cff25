/**
 * The pause between new sessions of one mailbox (Softdial's SleepBeforeSendNewIc), shared by
 * every path that hands a session to an ACD: a new email, and a session offered again after a
 * reconnect or a restart. Releases of one key run one after another; the next may start only
 * `pauseMs` after the previous one finished. Other keys are never held up.
 */
/**
 * The pause is a minimum as the ACD measures it, on arrival: a frame written on time can still
 * be read late (a busy event loop on either side), which would make the next one seem early.
 * This margin absorbs that jitter; measured on a loaded 2-core machine it was under 10 ms.
 */
export const PAUSE_MARGIN_MS = 50;

export class Pacer {
  readonly #slots = new Map<string, { next: number; chain: Promise<unknown> }>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Runs `release` in the key's next slot. When the slot is further away than `maxWaitMs`,
   * nothing runs and the wait is returned instead (the caller hands the work back, e.g. to
   * JetStream with a delay, rather than hold it in memory).
   */
  run<T>(key: string, pauseMs: number, release: () => Promise<T> | T, maxWaitMs = Number.POSITIVE_INFINITY): Promise<{ ran: true; value: T } | { ran: false; waitMs: number }> {
    const slot = this.#slots.get(key) ?? { next: 0, chain: Promise.resolve() };
    this.#slots.set(key, slot);
    const turn = slot.chain.then(async (): Promise<{ ran: true; value: T } | { ran: false; waitMs: number }> => {
      const wait = slot.next - this.now();
      if (wait > maxWaitMs) return { ran: false, waitMs: wait };
      // Timers may fire a millisecond early: wait until the pause has really passed.
      for (let left = wait; left > 0; left = slot.next - this.now()) await new Promise((r) => setTimeout(r, left + 1));
      try {
        return { ran: true, value: await release() };
      } finally {
        slot.next = this.now() + (pauseMs > 0 ? pauseMs + PAUSE_MARGIN_MS : 0);
      }
    });
    slot.chain = turn.catch(() => undefined);
    return turn;
  }
}
