import { jetstream, type JetStreamClient, type PubAck } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";

export interface PublishOptions {
  /**
   * The stable business key of this message (e.g. the message key or command id). JetStream drops
   * a second publish with the same id inside the stream's duplicate window, and every consumer
   * keys its idempotency on the same value.
   */
  msgId: string;
  /** Extra headers, e.g. `traceparent`. */
  headers?: Record<string, string>;
  /** Deadline for the server's acknowledgement. */
  timeoutMs?: number;
}

/** Publishes a JSON event to JetStream and waits for the server to store it. */
export async function publishJson(js: JetStreamClient, subject: string, payload: unknown, options: PublishOptions): Promise<PubAck> {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(options.headers ?? {})) h.set(k, v);
  return js.publish(subject, JSON.stringify(payload), {
    msgID: options.msgId,
    headers: h,
    timeout: options.timeoutMs ?? 10_000,
  });
}

export function jetStreamOf(nc: NatsConnection): JetStreamClient {
  return jetstream(nc, { timeout: 10_000 });
}
