import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { publishJson, type PublishOptions } from "./publish.js";

/** One publish handed to a window: `acked` settles when the server stored it (or refused it). */
export interface PendingPublish {
  /** The message id it was sent with. */
  readonly msgId: string;
  /**
   * The server's acknowledgement. Never an unhandled rejection: a failure is also kept for
   * `flush()`, so a caller that only flushes at the end still learns of it.
   */
  readonly acked: Promise<PubAck>;
}

export interface PublishWindowOptions {
  js: JetStreamClient;
  /** Publishes sent and not yet acknowledged, at most (default 64). */
  max?: number;
  /** Deadline for each acknowledgement (default 10 s). */
  timeoutMs?: number;
}

/**
 * Pipelined JetStream publishes: up to `max` are on the wire at once, each with its business key as
 * message id, instead of one round trip per event. `send` waits only for room in the window, not
 * for the acknowledgement; the caller decides what an acknowledgement unlocks (the poller advances
 * its cursor over the contiguous prefix of acknowledged publishes, never past a gap).
 *
 * The order in which JetStream stores the messages is the order they were sent on the connection
 * (one connection, one writer), so consumers still see them in send order; only the waiting is
 * overlapped. A failed publish is not retried here: the caller's cursor has not moved past it, and
 * its next attempt republishes under the same message id, which the stream deduplicates.
 */
export class PublishWindow {
  readonly #js: JetStreamClient;
  readonly #max: number;
  readonly #timeoutMs: number;
  readonly #inflight = new Set<Promise<unknown>>();
  #failure: unknown;

  constructor(options: PublishWindowOptions) {
    this.#js = options.js;
    this.#max = Math.max(1, options.max ?? 64);
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Publishes sent and not yet settled. */
  get inflight(): number {
    return this.#inflight.size;
  }

  /** The first failure since the last `flush()`, if any (a caller can stop sending early). */
  get failure(): unknown {
    return this.#failure;
  }

  /**
   * Waits for room in the window, sends, and returns without waiting for the acknowledgement.
   * `onStored` runs when the server stored it, before `flush()` can return: what it records is
   * there for whoever flushed.
   */
  async send(subject: string, payload: unknown, options: PublishOptions, onStored?: (ack: PubAck) => void): Promise<PendingPublish> {
    while (this.#inflight.size >= this.#max) await Promise.race(this.#inflight);
    const acked = publishJson(this.#js, subject, payload, { timeoutMs: this.#timeoutMs, ...options });
    const settled: Promise<unknown> = acked.then(
      (ack) => {
        this.#inflight.delete(settled);
        onStored?.(ack);
      },
      (error: unknown) => {
        this.#inflight.delete(settled);
        this.#failure ??= error;
      },
    );
    this.#inflight.add(settled);
    // The caller may never look at `acked` (it flushes instead): keep Node from calling that unhandled.
    acked.catch(() => undefined);
    return { msgId: options.msgId, acked };
  }

  /** Waits for every publish in flight; throws the first failure since the last flush. */
  async flush(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
    const failure = this.#failure;
    this.#failure = undefined;
    if (failure !== undefined) throw failure;
  }
}

/**
 * The cursor side of a window: positions (UIDs, sequence numbers) are registered in send order
 * and marked done when acknowledged; `done` is the last position of the contiguous acknowledged
 * prefix. A position acknowledged after a gap waits until the gap is filled, so a crash never
 * leaves a cursor past a message that was not stored.
 */
export class ContiguousPrefix<P> {
  readonly #queue: { position: P; done: boolean }[] = [];
  #head = 0;
  #done: P | undefined;

  constructor(initial?: P) {
    this.#done = initial;
  }

  /** Registers the next position (in send order); returns the function that marks it done. */
  add(position: P): () => void {
    const entry = { position, done: false };
    this.#queue.push(entry);
    return () => {
      entry.done = true;
      while (this.#head < this.#queue.length && this.#queue[this.#head]!.done) this.#done = this.#queue[this.#head++]!.position;
      // Drop the settled head now and then, so a long backlog does not keep every entry.
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#head);
        this.#head = 0;
      }
    };
  }

  /** The last position of the acknowledged prefix (the initial one when nothing is done yet). */
  get done(): P | undefined {
    return this.#done;
  }

  /** Positions registered and not yet covered by the prefix. */
  get pending(): number {
    return this.#queue.length - this.#head;
  }
}
