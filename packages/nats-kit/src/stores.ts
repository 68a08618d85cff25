import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { Objm, setSha256Backend, type ObjectStore } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { retryTransient } from "./transient.js";

/**
 * Opens (creating if needed) a KV bucket. Retried while JetStream is between leaders (see
 * `retryTransient`): services open their buckets at start, which may be during an election.
 * Resolves once the bucket has a leader: on a cluster a bucket just created elects one after a
 * moment, and a put before that finds no responders — the archiver exited at start on it, on
 * the three-node test cluster of a loaded machine.
 *
 * Reads go to the bucket's stream leader (STREAM.MSG.GET), never as direct gets: a direct get may
 * be answered by any replica, and on a cluster a replica can be behind the leader — a cursor or a
 * lease read back from one is a value from before the last write. Leases, cursors, seen-state and
 * send receipts are only worth reading if the read sees every acknowledged write, so this is the
 * cost (one leader per read) taken for all of them. Found by the KV failover test: after the
 * leader of a bucket was killed, direct gets returned a stale cursor or timed out for 30 s.
 */
export async function openKv(nc: NatsConnection, bucket: string, options: { replicas?: number; history?: number; ttlMs?: number } = {}): Promise<KV> {
  const kv = await retryTransient(() =>
    new Kvm(nc).create(bucket, {
      replicas: options.replicas ?? 1,
      history: options.history ?? 1,
      allow_direct: false,
      ...(options.ttlMs ? { ttl: options.ttlMs } : {}),
    }),
  );
  await ledStream(nc, `KV_${bucket}`);
  return kv;
}

/** Waits (as `retryTransient` does) until `stream` has a leader; a single server's always has. */
async function ledStream(nc: NatsConnection, stream: string): Promise<void> {
  await retryTransient(async () => {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    if (info.cluster && !info.cluster.leader) throw new Error(`stream ${stream}: leader not elected yet`);
  });
}

/** Opens (creating if needed) an object store bucket; retried, and waited for, like `openKv`. */
export async function openObjectStore(nc: NatsConnection, bucket: string, options: { replicas?: number; ttlMs?: number } = {}): Promise<ObjectStore> {
  // nats.js hashes every object it puts and gets (its SHA-256 digest) in pure JavaScript by
  // default: seconds of CPU per 25 MB message on a loaded machine, on the event loop of the poller
  // and the archiver. Node's native hash gives the same digest at a fraction of the cost. (The
  // setting is process-wide; set here, where every service's object store is opened.)
  setSha256Backend("native");
  const store = await retryTransient(() =>
    new Objm(nc).create(bucket, {
      replicas: options.replicas ?? 1,
      storage: "file" as never,
      ...(options.ttlMs ? { ttl: options.ttlMs * 1_000_000 } : {}),
    }),
  );
  await ledStream(nc, `OBJ_${bucket}`);
  return store;
}
