import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";

/**
 * The keys matching `filter` (a KV key pattern such as `lease.>`) that hold a value now: deleted
 * and purged keys are left out, as `kv.keys()` leaves them out.
 *
 * Why not `kv.keys()`: it creates an ephemeral ordered consumer per call, and on a nats-server 2.9
 * cluster with one node down about half of those creations time out (the consumer is placed on a
 * peer of the stream, the dead one included) for as long as the node stays down — measured on the
 * test kit's three-node cluster. A poller listing leases every two seconds then never completes a
 * round and stops taking mailboxes. This asks the stream's leader instead: `$JS.API.STREAM.INFO`
 * with a subject filter names every subject that has a message, and one get per subject (the
 * stream leader answers those too) tells a value from a delete marker. It costs one request per
 * key; the keys listed here are leases and replica heartbeats, a few per mailbox.
 */
export async function liveKeys(kv: KV, filter: string): Promise<string[]> {
  const bucket = kv as unknown as { jsm: JetStreamManager; stream: string; prefix: string };
  const prefix = `${bucket.prefix}.`;
  const info = await bucket.jsm.streams.info(bucket.stream, { subjects_filter: `${prefix}${filter}` });
  const keys = Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
  const live: string[] = [];
  // Batches of 64 in parallel: a thousand leases are read in a few round trips, not a thousand.
  for (let i = 0; i < keys.length; i += 64) {
    const entries = await Promise.all(keys.slice(i, i + 64).map((k) => kv.get(k)));
    for (const e of entries) if (e && e.operation === "PUT" && e.value.length > 0) live.push(e.key);
  }
  return live;
}
