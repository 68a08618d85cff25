import { AckPolicy, DeliverPolicy, jetstreamManager, type ConsumerConfig, type JsMsg, type ConsumerMessages } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SpanKind, SpanStatusCode, context, metrics, trace, type Counter, type Histogram } from "@opentelemetry/api";
import { HANDLE_BUCKETS_SECONDS, METRICS } from "@postroom/telemetry/catalogue";
import type { z } from "zod";
import { jetStreamOf } from "./publish.js";
import { retryTransient } from "./transient.js";
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
  /**
   * Acknowledge with a plain `ack()` (no round trip) instead of waiting for the server to confirm
   * it (`ackAck()`, the default). Only for handlers that are idempotent end to end: a lost ack means
   * one redelivery after the ack wait, which such a handler recognises as done.
   */
  plainAcks?: boolean;
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
    return durableLag(this.options.nc, this.options.stream, this.options.durable);
  }

  async start(): Promise<void> {
    const o = this.options;
    ({ handled: this.#handled, duration: this.#duration } = handlerInstruments());
    const config = {
      durable_name: o.durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: o.filterSubject,
      ack_wait: (o.ackWaitMs ?? 60_000) * 1_000_000,
      max_ack_pending: o.maxAckPending ?? 1,
      deliver_policy: o.deliverPolicy === "new" ? DeliverPolicy.New : DeliverPolicy.All,
    };
    const consumer = await ensureDurable(o.nc, o.stream, config);
    this.#messages = await consumer.consume({ max_messages: Math.max(1, o.maxAckPending ?? 1), ...PULL_LIFETIME });
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
      msg.term();
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
        if (o.plainAcks) msg.ack();
        else await msg.ackAck().catch(() => msg.ack());
        break;
      case "retry":
        msg.nak(verdict.delayMs);
        break;
      case "term":
        o.onProblem?.({ subject: msg.subject, reason: verdict.reason, action: "term" });
        // Without the reason: nats-server 2.9 does not know "+TERM <reason>" (2.10 added it) and
        // leaves the message pending, to come back after every ack wait, for ever. The reason is
        // in the log through onProblem instead.
        msg.term();
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

/**
 * How every consumer pulls, so that a pull lost with its consumer's leader is noticed within
 * seconds. A pull request waits only on the node that leads the consumer; when that node dies
 * the request dies with it, silently: no message, no "request expired", and the client's own
 * connection (to another node) never drops. nats.js notices only by missing the pull's idle
 * heartbeats (two in a row), then pulls again; and the new leader's "409 Leadership Change" to
 * the lost request counts as a heartbeat, so the count starts over after the election. With
 * nats.js's defaults (30 s pulls, heartbeats every 15 s) consumption stopped for 45 s after every
 * SIGKILL of a consumer's leader on the three-node 2.9 cluster with the node left down
 * (`src/cluster-failover.test.ts`); with these, 8–10 s. `bind`: while heartbeats are missing,
 * pull again every second without first asking CONSUMER.INFO — which, while the consumer elects
 * its new leader, waits out its 10 s deadline and then backs off for up to 7.5 s more (10–24 s
 * measured with it). What `bind` gives up: nats.js would report a consumer deleted from under it
 * (it went on retrying then too; nothing here deletes a durable). The price: per idle consumer
 * a heartbeat every second and a new pull every 5 s, small messages, no JetStream API requests.
 */
export const PULL_LIFETIME = { expires: 5_000, idle_heartbeat: 1_000, bind: true } as const;

/** Capped exponential backoff with jitter for redeliveries: 1 s, 2 s, 4 s … 60 s. */
export function backoffMs(deliveryCount: number, random: () => number = Math.random): number {
  const base = Math.min(60_000, 1000 * 2 ** Math.max(0, deliveryCount - 1));
  return Math.round(base / 2 + (random() * base) / 2);
}

/** A durable consumer's lag as the server reports it (not yet delivered; delivered, not acknowledged). */
export async function durableLag(nc: NatsConnection, stream: string, durable: string): Promise<{ consumer: string; pending: number; ackPending: number }> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.consumers.info(stream, durable);
  return { consumer: durable, pending: info.num_pending, ackPending: info.num_ack_pending };
}

/**
 * The handled-messages counter and handling-time histogram every consumer records. Made when a
 * consumer starts, not at import: the metrics API has no proxy, so instruments must be created
 * after the service started telemetry (a no-op meter otherwise).
 */
export function handlerInstruments(): { handled: Counter; duration: Histogram } {
  const meter = metrics.getMeter("@postroom/nats-kit");
  return {
    handled: meter.createCounter(METRICS.handled.name, { description: METRICS.handled.help }),
    duration: meter.createHistogram(METRICS.handleDuration.name, {
      description: METRICS.handleDuration.help,
      advice: { explicitBucketBoundaries: HANDLE_BUCKETS_SECONDS },
    }),
  };
}

/**
 * Creates the durable consumer or brings an existing one's settings up to date (its name and
 * deliver policy cannot change), and returns it for pulling. Retried while JetStream is between
 * leaders (a cluster node just died, or the server is restarting): a service starting then waits
 * for the election instead of exiting.
 */
export async function ensureDurable(nc: NatsConnection, stream: string, config: Partial<ConsumerConfig> & { durable_name: string }) {
  return retryTransient(async () => {
    const jsm = await jetstreamManager(nc);
    try {
      await jsm.consumers.info(stream, config.durable_name);
      const { durable_name: _name, deliver_policy: _policy, ...update } = config;
      await jsm.consumers.update(stream, config.durable_name, update);
    } catch (error) {
      if (!/not found/i.test(String(error))) throw error;
      try {
        await jsm.consumers.add(stream, config);
      } catch (addError) {
        if (!/already (in use|exists)/i.test(String(addError))) throw addError;
      }
    }
    return jetStreamOf(nc).consumers.get(stream, config.durable_name);
  });
}

/**
 * Runs `work` on a message, telling JetStream every third of `ackWaitMs` that it is still in hand
 * (`working()`). A consumer can then keep a short ack wait — a crashed process's messages come
 * back within it — while a handler that legitimately waits (a send on a slow link, a session held
 * for the pause between offers) keeps its message.
 */
export async function whileWorking<T>(msg: JsMsg, ackWaitMs: number, work: () => Promise<T>): Promise<T> {
  const timer = setInterval(() => msg.working(), Math.max(1_000, Math.floor(ackWaitMs / 3)));
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
