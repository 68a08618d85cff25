import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SpanKind, SpanStatusCode, context, trace, type Context, type Counter, type Histogram, type Span } from "@opentelemetry/api";
import type { z } from "zod";
import { backoffMs, durableLag, ensureDurable, handlerInstruments, PULL_LIFETIME, type Verdict } from "./consume.js";
import { traceContextOf } from "./trace-context.js";

/** One message of a batch: its parsed payload and the JetStream message (headers, delivery count). */
export interface BatchItem<T> {
  payload: T;
  msg: JsMsg;
  /**
   * The message's own CONSUMER span (`process <durable>`, a child of the publisher's) as a
   * context: run this message's logging and publishes inside it (`context.with`) so one email
   * stays one trace, batch or not.
   */
  context: Context;
  /** Runs `fn` inside `context` (for callers that do not depend on @opentelemetry/api themselves). */
  within<R>(fn: () => R): R;
}

export interface BatchConsumerOptions<T> {
  nc: NatsConnection;
  stream: string;
  /** Durable name (kebab-case, after the consuming service). */
  durable: string;
  filterSubject: string;
  /** The payload schema; a payload that does not parse is terminated on its own, the rest go on. */
  schema: z.ZodType<T>;
  /**
   * Handles a batch in delivery order and returns one verdict per item, in the same order. The
   * acknowledgements are sent only after it returns (after the caller's commit). A handler that
   * throws sends the whole batch back for redelivery after a backoff: it must be idempotent.
   */
  handler: (batch: BatchItem<T>[]) => Promise<Verdict[]>;
  /** Most messages in one batch (default 256). */
  maxBatch?: number;
  /**
   * Most payload bytes in one batch (default 16 MiB): a batch closes early rather than hold more,
   * so memory stays bounded however large the inline messages are. A single larger message still
   * forms a batch of its own.
   */
  maxBatchBytes?: number;
  /** How long the server waits for an ack before redelivering (default 60 s); kept alive while held. */
  ackWaitMs?: number;
  /** Called for each message that failed or was terminated, for logging. */
  onProblem?: (problem: { subject: string; reason: string; action: Verdict["action"]; error?: unknown }) => void;
  /** Where new durable consumers start (default: all messages in the stream). */
  deliverPolicy?: "all" | "new";
}

/**
 * A durable pull consumer that hands its handler batches instead of single messages, for writers
 * that commit many messages at once (the archiver's group commit). Batches adapt by themselves:
 * the next batch is everything that arrived while the previous one was handled (at most
 * `maxBatch` / `maxBatchBytes`), so an idle stream gives batches of one with no added wait and a
 * backlog gives full ones. Batches are handled one at a time, in delivery order. Every message in
 * hand — in the batch and waiting for the next — is kept alive with "working" so a long commit
 * never causes a redelivery; after a crash they come back within `ackWaitMs`.
 */
export class BatchConsumer<T> {
  #messages: ConsumerMessages | undefined;
  #pump: Promise<void> | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  readonly #queue: { msg: JsMsg; bytes: number }[] = [];
  #queuedBytes = 0;
  /** Wakes the batch loop (a message arrived, or stop). */
  #arrived: (() => void) | undefined;
  /** Wakes the pump (the batch loop took messages out of the queue). */
  #taken: (() => void) | undefined;
  readonly #held = new Set<JsMsg>();
  #heartbeat: NodeJS.Timeout | undefined;
  #handled: Counter | undefined;
  #duration: Histogram | undefined;
  readonly #maxBatch: number;
  readonly #maxBytes: number;

  constructor(private readonly options: BatchConsumerOptions<T>) {
    this.#maxBatch = Math.max(1, options.maxBatch ?? 256);
    this.#maxBytes = Math.max(1, options.maxBatchBytes ?? 16 * 1024 * 1024);
  }

  get durable(): string {
    return this.options.durable;
  }

  async lag(): Promise<{ consumer: string; pending: number; ackPending: number }> {
    return durableLag(this.options.nc, this.options.stream, this.options.durable);
  }

  async start(): Promise<void> {
    const o = this.options;
    ({ handled: this.#handled, duration: this.#duration } = handlerInstruments());
    const ackWaitMs = o.ackWaitMs ?? 60_000;
    const config = {
      durable_name: o.durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: o.filterSubject,
      ack_wait: ackWaitMs * 1_000_000,
      // The batch in hand and the next one: the server never delivers more than that unacknowledged.
      max_ack_pending: this.#maxBatch * 2,
      deliver_policy: o.deliverPolicy === "new" ? DeliverPolicy.New : DeliverPolicy.All,
    };
    // Set up like every durable consumer's, so it too waits out a JetStream leader election.
    const consumer = await ensureDurable(o.nc, o.stream, config);
    // Pulled by bytes as well as count, so a run of large inline messages cannot fill memory.
    // (The count is bounded by the server: max_ack_pending above.) Short-lived pulls, so one lost
    // with the consumer's leader is noticed within seconds (PULL_LIFETIME).
    this.#messages = await consumer.consume({ max_bytes: this.#maxBytes, ...PULL_LIFETIME });
    this.#heartbeat = setInterval(() => {
      for (const m of this.#held) m.working();
    }, ackWaitMs / 3);
    this.#heartbeat.unref();
    this.#pump = this.#runPump();
    this.#loop = this.#runBatches();
  }

  async #runPump(): Promise<void> {
    for await (const msg of this.#messages!) {
      if (this.#stopping) {
        msg.nak();
        continue;
      }
      this.#held.add(msg);
      const bytes = msg.data.length;
      this.#queue.push({ msg, bytes });
      this.#queuedBytes += bytes;
      this.#arrived?.();
      // Backpressure: while a full batch waits, stop reading, so the client's own buffer (one
      // pull of at most maxBatch / maxBatchBytes) is all that accumulates behind it.
      while (!this.#stopping && (this.#queue.length >= this.#maxBatch || this.#queuedBytes >= this.#maxBytes)) {
        await new Promise<void>((resolve) => (this.#taken = resolve));
      }
    }
  }

  async #runBatches(): Promise<void> {
    for (;;) {
      while (this.#queue.length === 0 && !this.#stopping) await new Promise<void>((resolve) => (this.#arrived = resolve));
      if (this.#stopping) break;
      const batch: JsMsg[] = [];
      let bytes = 0;
      while (this.#queue.length > 0 && batch.length < this.#maxBatch && (batch.length === 0 || bytes + this.#queue[0]!.bytes <= this.#maxBytes)) {
        const next = this.#queue.shift()!;
        this.#queuedBytes -= next.bytes;
        bytes += next.bytes;
        batch.push(next.msg);
      }
      this.#taken?.();
      await this.#handle(batch);
    }
  }

  async #handle(batch: JsMsg[]): Promise<void> {
    const o = this.options;
    const started = performance.now();
    const items: BatchItem<T>[] = [];
    const spans: Span[] = [];
    for (const msg of batch) {
      let payload: T;
      try {
        payload = o.schema.parse(msg.json());
      } catch (error) {
        o.onProblem?.({ subject: msg.subject, reason: "payload does not match the schema", action: "term", error });
        this.#settle(msg, { action: "term", reason: "payload does not match the schema" });
        continue;
      }
      const parent = traceContextOf(msg.headers);
      const span = trace.getTracer("@postroom/nats-kit").startSpan(
        `process ${o.durable}`,
        {
          kind: SpanKind.CONSUMER,
          attributes: {
            "messaging.system": "nats",
            "messaging.destination.name": msg.subject,
            "messaging.consumer.group.name": o.durable,
            "messaging.nats.delivery_count": msg.info.deliveryCount,
            "messaging.batch.message_count": batch.length,
          },
        },
        parent,
      );
      spans.push(span);
      const ctx = trace.setSpan(parent, span);
      items.push({ payload, msg, context: ctx, within: (fn) => context.with(ctx, fn) });
    }
    if (items.length === 0) return;
    let verdicts: Verdict[];
    try {
      verdicts = await o.handler(items);
      if (verdicts.length !== items.length) throw new Error(`the batch handler returned ${verdicts.length} verdicts for ${items.length} messages`);
    } catch (error) {
      const reason = (error as Error)?.message ?? String(error);
      o.onProblem?.({ subject: items[0]!.msg.subject, reason: `batch of ${items.length}: ${reason}`, action: "retry", error });
      verdicts = items.map((i) => ({ action: "retry", delayMs: backoffMs(i.msg.info.deliveryCount), reason }));
    }
    const seconds = (performance.now() - started) / 1000;
    items.forEach((item, i) => {
      const verdict = verdicts[i]!;
      if (verdict.action === "term") o.onProblem?.({ subject: item.msg.subject, reason: verdict.reason, action: "term" });
      this.#settle(item.msg, verdict);
      this.#duration?.record(seconds, { consumer: o.durable });
      const span = spans[i]!;
      if (verdict.action !== "ack") span.setStatus({ code: SpanStatusCode.ERROR, message: `${verdict.action}: ${verdict.reason}` });
      span.setAttribute("postroom.verdict", verdict.action);
      span.end();
    });
  }

  #settle(msg: JsMsg, verdict: Verdict): void {
    this.#held.delete(msg);
    // Plain acks: the work is committed and idempotent, so an ack lost on the way only means a
    // redelivery that is confirmed again without writing anything.
    if (verdict.action === "ack") msg.ack();
    else if (verdict.action === "retry") msg.nak(verdict.delayMs);
    // No reason text: nats-server 2.9 does not recognise "+TERM <reason>" and leaves the message pending.
    else msg.term();
    this.#handled?.add(1, { consumer: this.options.durable, result: verdict.action });
  }

  /** Stops taking batches, lets the one in hand finish, returns what was waiting, closes the subscription. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#arrived?.();
    this.#taken?.();
    await this.#loop?.catch(() => undefined);
    for (const { msg } of this.#queue.splice(0)) {
      this.#held.delete(msg);
      msg.nak();
    }
    this.#queuedBytes = 0;
    clearInterval(this.#heartbeat);
    await this.#messages?.close();
    await this.#pump?.catch(() => undefined);
  }
}
