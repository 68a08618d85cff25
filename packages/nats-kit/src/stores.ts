import { Kvm, type KV } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";

/** Opens (creating if needed) a KV bucket. */
export async function openKv(nc: NatsConnection, bucket: string, options: { replicas?: number; history?: number; ttlMs?: number } = {}): Promise<KV> {
  return new Kvm(nc).create(bucket, {
    replicas: options.replicas ?? 1,
    history: options.history ?? 1,
    ...(options.ttlMs ? { ttl: options.ttlMs } : {}),
  });
}

/** Opens (creating if needed) an object store bucket. */
export async function openObjectStore(nc: NatsConnection, bucket: string, options: { replicas?: number; ttlMs?: number } = {}): Promise<ObjectStore> {
  return new Objm(nc).create(bucket, {
    replicas: options.replicas ?? 1,
    storage: "file" as never,
    ...(options.ttlMs ? { ttl: options.ttlMs * 1_000_000 } : {}),
  });
}
