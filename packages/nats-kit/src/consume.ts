import { AckPolicy, DeliverPolicy, jetstreamManager, type JsMsg, type ConsumerMessages } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SpanKind, SpanStatusCode, context, metrics, trace, type Counter, type Histogram } from "@opentelemetry/api";
import { HANDLE_BUCKETS_SECONDS, METRICS } from "@postroom/telemetry/catalogue";
import type { z } from "zod";
import { jetStreamOf } from "./publish.js";
import { traceContextOf } from "./trace-context.js";

/** What a handler decided about one message. Decided by the service's pure classifiers. */
export type Verdict =
  | { action: "ack" }
  /** Try again later: the message stays in the stream. */
  | { action: "retry"; delayMs: number; reason: string }
  /** Never deliverable (e.g. a payload of an unknown version): stop redelivering it. */
  | { action: "term"; reason: string };

export const ack: Verdict = { action: "ack" };

export interface DurableConsumerOptions<T> {
  nc: NatsConnection;
  stream: string;
  /** Durable name (kebab-case, after the consuming service). */
  durable: string;
  filterSubject: string;
  /** The payload schema; a payload that does not parse is terminated, not retried forever. */
  schema: z.ZodType<T>;
  handler: (payload: T, msg: JsMsg) => Promise<Verdict>;
  /** How long the server waits for an ack before redelivering (default 60 s). */
  ackWaitMs?: number;
  /** Messages handled at once (default 1: in order). */
  maxAckPending?: number;
  /** Called for each message that failed or was terminated, for logging. */
  onProblem?: (problem: { subject: string; reason: string; action: Verdict["action"]; error?: unknown }) => void;
  /** Where new durable consumers start (default: all messages in the stream). */
  deliverPolicy?: "all" | "new";
}

/**
 * A durable pull consumer with explicit acks. Messages are handled one at a time (or up to
 * `maxAckPending` concurrently); a handler that throws is treated as a transient failure and the
 * message is redelivered after a backoff, so a dead dependency pauses work and nothing is lost.
 */
export class DurableConsumer<T> {
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  readonly #inflight = new Set<Promise<void>>();
  #handled: Counter | undefined;
  #duration: Histogram | undefined;

  constructor(private readonly options: DurableConsumerOptions<T>) {}

  /** The durable consumer's name. */
  get durable(): string {
    return this.options.durable;
  }

  /**
   * How far behind this consumer is: messages not yet delivered (`pending`) and delivered but not
   * acknowledged (`ackPending`). Read from the server, for the lag gauges and readiness.
   */
  async lag(): Promise<{ consumer: string; pending: number; ackPending: number }> {
    const jsm = await jetstreamManager(this.options.nc);
    const info = await jsm.consumers.info(this.options.stream, this.options.durable);
    return { consumer: this.options.durable, pending: info.num_pending, ackPending: info.num_ack_pending };
  }

  async start(): Promise<void> {
    const o = this.options;
    // Instruments are made here, not at import: the metrics API has no proxy, so they must be
    // created after the service started telemetry (a no-op meter otherwise).
    const meter = metrics.getMeter("@postroom/nats-kit");
    this.#handled = meter.createCounter(METRICS.handled.name, { description: METRICS.handled.help });
    this.#duration = meter.createHistogram(METRICS.handleDuration.name, {
      description: METRICS.handleDuration.help,
      advice: { explicitBucketBoundaries: HANDLE_BUCKETS_SECONDS },
    });
    const jsm = await jetstreamManager(o.nc);
    const config = {
      durable_name: o.durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: o.filterSubject,
      ack_wait: (o.ackWaitMs ?? 60_000) * 1_000_000,
      max_ack_pending: o.maxAckPending ?? 1,
      deliver_policy: o.deliverPolicy === "new" ? DeliverPolicy.New : DeliverPolicy.All,
    };
    try {
      await jsm.consumers.info(o.stream, o.durable);
      const { durable_name: _name, deliver_policy: _policy, ...update } = config;
      await jsm.consumers.update(o.stream, o.durable, update);
    } catch (error) {
      if (!/not found/i.test(String(error))) throw error;
      try {
        await jsm.consumers.add(o.stream, config);
      } catch (addError) {
        if (!/already (in use|exists)/i.test(String(addError))) throw addError;
      }
    }
    const consumer = await jetStreamOf(o.nc).consumers.get(o.stream, o.durable);
    this.#messages = await consumer.consume({ max_messages: Math.max(1, o.maxAckPending ?? 1) });
    const limit = o.maxAckPending ?? 1;
    this.#loop = (async () => {
      for await (const msg of this.#messages!) {
        if (this.#stopping) {
          msg.nak();
          continue;
        }
        const p = this.#handle(msg).finally(() => this.#inflight.delete(p));
        this.#inflight.add(p);
        if (this.#inflight.size >= limit) await Promise.race(this.#inflight);
      }
    })();
  }

  async #handle(msg: JsMsg): Promise<void> {
    // The handler runs inside a CONSUMER span continuing the trace the publisher started, so its
    // log lines carry the email's trace id and its own publishes join the same trace.
    const parent = traceContextOf(msg.headers);
    const span = trace.getTracer("@postroom/nats-kit").startSpan(
      `process ${this.options.durable}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.system": "nats",
          "messaging.destination.name": msg.subject,
          "messaging.consumer.group.name": this.options.durable,
          "messaging.nats.delivery_count": msg.info.deliveryCount,
        },
      },
      parent,
    );
    const started = performance.now();
    const verdict = await context.with(trace.setSpan(parent, span), () => this.#decide(msg));
    if (verdict.action !== "ack") span.setStatus({ code: SpanStatusCode.ERROR, message: `${verdict.action}: ${verdict.reason}` });
    span.setAttribute("postroom.verdict", verdict.action);
    span.end();
    this.#handled?.add(1, { consumer: this.options.durable, result: verdict.action });
    this.#duration?.record((performance.now() - started) / 1000, { consumer: this.options.durable });
  }

  async #decide(msg: JsMsg): Promise<Verdict> {
    const o = this.options;
    let payload: T;
    try {
      payload = o.schema.parse(msg.json());
    } catch (error) {
      o.onProblem?.({ subject: msg.subject, reason: "payload does not match the schema", action: "term", error });
      msg.term("payload does not match the schema");
      return { action: "term", reason: "payload does not match the schema" };
    }
    let verdict: Verdict;
    try {
      verdict = await o.handler(payload, msg);
    } catch (error) {
      const delayMs = backoffMs(msg.info.deliveryCount);
      verdict = { action: "retry", delayMs, reason: (error as Error)?.message ?? String(error) };
      o.onProblem?.({ subject: msg.subject, reason: verdict.reason, action: "retry", error });
    }
    switch (verdict.action) {
      case "ack":
        await msg.ackAck().catch(() => msg.ack());
        break;
      case "retry":
        msg.nak(verdict.delayMs);
        break;
      case "term":
        o.onProblem?.({ subject: msg.subject, reason: verdict.reason, action: "term" });
        msg.term(verdict.reason);
        break;
    }
    return verdict;
  }

  /** Stops taking new messages, lets the ones in hand finish, then closes the subscription. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.allSettled([...this.#inflight]);
    await this.#messages?.close();
    await this.#loop?.catch(() => undefined);
  }
}

/** Capped exponential backoff with jitter for redeliveries: 1 s, 2 s, 4 s … 60 s. */
export function backoffMs(deliveryCount: number, random: () => number = Math.random): number {
  const base = Math.min(60_000, 1000 * 2 ** Math.max(0, deliveryCount - 1));
  return Math.round(base / 2 + (random() * base) / 2);
}
