import { jetstreamManager, type StreamConfig } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { StreamDefinition } from "@postroom/contracts";
import { retryTransient } from "./transient.js";

/**
 * Creates the streams that do not exist and updates the ones that do, so every service can call
 * it at start-up (several replicas at once included: "already in use" from a concurrent creator
 * is treated as success). A JetStream cluster between leaders (a node just died) answers with
 * timeouts for a few seconds: each stream is retried until it answers (`retryTransient`), so a
 * service started during an election waits instead of exiting.
 */
export async function ensureStreams(nc: NatsConnection, definitions: StreamDefinition[]): Promise<void> {
  const jsm = await retryTransient(() => jetstreamManager(nc));
  for (const def of definitions) await retryTransient(() => ensureStream(jsm, def));
}

async function ensureStream(jsm: Awaited<ReturnType<typeof jetstreamManager>>, def: StreamDefinition): Promise<void> {
  const config = def as unknown as StreamConfig;
  try {
    await jsm.streams.info(def.name);
    const { name, ...update } = config;
    await jsm.streams.update(name, update);
  } catch (error) {
    if (!isNotFound(error)) throw error;
    try {
      await jsm.streams.add(config);
    } catch (addError) {
      if (!/already in use/i.test(String(addError))) throw addError;
    }
  }
}

function isNotFound(error: unknown): boolean {
  return /not found/i.test(String((error as Error)?.message ?? error));
}
