import { jetstream, type JetStreamClient, type PubAck } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { traceHeaders } from "./trace-context.js";

export interface PublishOptions {
  /**
   * The stable business key of this message (e.g. the message key or command id). JetStream drops
   * a second publish with the same id inside the stream's duplicate window, and every consumer
   * keys its idempotency on the same value.
   */
  msgId: string;
  /**
   * Extra headers. A `traceparent` given here is sent as is; otherwise the publish's own span
   * (a child of the active one, or the root of a new trace) is injected.
   */
  headers?: Record<string, string>;
  /** Deadline for the server's acknowledgement. */
  timeoutMs?: number;
}

/**
 * Publishes a JSON event to JetStream and waits for the server to store it. The publish is a
 * PRODUCER span and its W3C trace context travels in the message's headers, so one email is one
 * trace from the poller to the agent's reply.
 */
export async function publishJson(js: JetStreamClient, subject: string, payload: unknown, options: PublishOptions): Promise<PubAck> {
  const tracer = trace.getTracer("@postroom/nats-kit");
  const span = tracer.startSpan("publish", {
    kind: SpanKind.PRODUCER,
    attributes: { "messaging.system": "nats", "messaging.destination.name": subject, "messaging.message.id": options.msgId },
  });
  try {
    const h = natsHeaders();
    const given = options.headers ?? {};
    const carried = "traceparent" in given ? {} : traceHeaders(trace.setSpan(context.active(), span));
    for (const [k, v] of Object.entries({ ...carried, ...given })) h.set(k, v);
    const ack = await js.publish(subject, JSON.stringify(payload), {
      msgID: options.msgId,
      headers: h,
      timeout: options.timeoutMs ?? 10_000,
    });
    if (ack.duplicate) span.setAttribute("messaging.nats.duplicate", true);
    else notifyPublished(subject, payload);
    return ack;
  } catch (error) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
    throw error;
  } finally {
    span.end();
  }
}

/** Called after an event was stored for the first time (not for a duplicate of a stored one). */
export type PublishListener = (subject: string, payload: unknown) => void;

const listeners = new Set<PublishListener>();

/**
 * Observes this process's publishes. A service's main() uses it to count what it emitted — each
 * event once, since JetStream reports a republished message id as a duplicate — without touching
 * the components that publish. Returns the function that removes the listener.
 */
export function onPublished(listener: PublishListener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function notifyPublished(subject: string, payload: unknown): void {
  for (const l of listeners) {
    try {
      l(subject, payload);
    } catch {
      // An observer's mistake must never fail a publish that JetStream already stored.
    }
  }
}

export function jetStreamOf(nc: NatsConnection): JetStreamClient {
  return jetstream(nc, { timeout: 10_000 });
}
