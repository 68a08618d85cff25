import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** One durable consumer to watch: the stream and durable name from @postroom/contracts. */
export interface WatchedConsumer {
  stream: string;
  durable: string;
}

/**
 * Reads the lag of durable consumers (not yet delivered, and delivered but unacknowledged) from the
 * server, for the lag gauges a service registers with `telemetry.metrics.observeConsumers`. A
 * consumer that does not exist yet is left out rather than failing the whole scrape.
 */
export function consumerLagReader(nc: NatsConnection, consumers: WatchedConsumer[]): () => Promise<{ consumer: string; pending: number; ackPending: number }[]> {
  return async () => {
    const jsm = await jetstreamManager(nc);
    const out: { consumer: string; pending: number; ackPending: number }[] = [];
    for (const c of consumers) {
      try {
        const info = await jsm.consumers.info(c.stream, c.durable);
        out.push({ consumer: c.durable, pending: info.num_pending, ackPending: info.num_ack_pending });
      } catch {
        // Not created yet (the service has not started it) or NATS is away: no sample this time.
      }
    }
    return out;
  };
}
