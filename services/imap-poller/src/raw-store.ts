import { createHash } from "node:crypto";
import { Readable, Transform } from "node:stream";
import type { ObjectStore } from "@postroom/nats-kit";

/**
 * Object-store chunk size for raw mail: about a megabyte (nats.js defaults to 128 KB, eight times
 * the publishes per message). Just under 1 MiB, because the server's payload limit (1 MiB by
 * default) counts the chunk's headers too.
 */
export const RAW_CHUNK_BYTES = 1000 * 1024;

/** What was stored: the byte count and SHA-256 of the raw message. */
export interface StoredRaw {
  size: number;
  sha256: string;
}

/**
 * Streams a raw message into the object store, hashing it on the way: the message is never held
 * whole in memory (the object store chunks it, so JetStream's maximum message size never limits
 * the size of an email). `idleMs` is the deadline for the source between two chunks.
 */
export async function storeRaw(store: ObjectStore, name: string, source: Readable, idleMs = 60_000): Promise<StoredRaw> {
  const hash = createHash("sha256");
  let size = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => source.destroy(new Error(`no data from the server for ${idleMs} ms while downloading`)), idleMs);
  };
  arm();
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      arm();
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  source.on("error", (e) => meter.destroy(e));
  try {
    await store.put({ name, options: { max_chunk_size: RAW_CHUNK_BYTES } }, Readable.toWeb(source.pipe(meter)) as ReadableStream<Uint8Array>);
  } finally {
    clearTimeout(timer);
  }
  return { size, sha256: hash.digest("hex") };
}
