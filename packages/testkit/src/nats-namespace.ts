import { randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

/** NATS_URL, or the local test server. */
export function natsUrl(env: NodeJS.ProcessEnv = process.env): string {
  const url = env.NATS_URL;
  return url !== undefined && url !== "" ? url : "nats://127.0.0.1:4222";
}

/**
 * A fresh namespace root for `@postroom/contracts`' `names(root)`: `t<prefix><random>`, lowercase
 * letters and digits only, at most 64 characters, so every test file gets its own subjects,
 * streams and buckets on the shared NATS server.
 *
 * No "-" or "_" inside: stream names upper-case the root and replace "-" by "_", so a root "ta" and
 * a root "ta_b" would share the stream prefix "TA_" and clean up each other's streams.
 */
export function testNamespace(prefix = ""): string {
  const safe = prefix.toLowerCase().replace(/[^a-z0-9]/g, "").slice(0, 40);
  return `t${safe}${randomBytes(6).toString("hex")}`;
}

/** Names of the JetStream streams that belong to namespace `root` (streams, KV buckets, object stores). */
export function belongsToNamespace(streamName: string, root: string): boolean {
  const upper = root.toUpperCase().replaceAll("-", "_");
  return streamName.startsWith(`${upper}_`) || streamName.startsWith(`KV_${root}-`) || streamName.startsWith(`OBJ_${root}-`);
}

/**
 * Deletes every JetStream stream, KV bucket (stream `KV_<root>-*`) and object store (`OBJ_<root>-*`)
 * of namespace `root`; their consumers go with them. Returns the deleted stream names. Core NATS
 * subjects need no cleanup.
 */
export async function cleanupNamespace(url: string, root: string): Promise<string[]> {
  if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(root)) throw new Error(`"${root}" is not a namespace root`);
  const nc = await connect({ servers: url, name: "postroom-testkit-cleanup", timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const doomed: string[] = [];
    for await (const name of jsm.streams.names()) {
      if (belongsToNamespace(name, root)) doomed.push(name);
    }
    for (const name of doomed) await jsm.streams.delete(name);
    return doomed;
  } finally {
    await nc.close();
  }
}
