import { createHash } from "node:crypto";
import { Readable, Transform } from "node:stream";
import type { ObjectStore } from "@postroom/nats-kit";

/**
 * Object-store chunk size for raw mail: about a megabyte (nats.js defaults to 128 KB, eight times
 * the publishes per message). Just under 1 MiB, because the server's payload limit (1 MiB by
 * default) counts the chunk's headers too.
 */
export const RAW_CHUNK_BYTES = 1000 * 1024;

/**
 * Streaming a message leaves several short-lived copies of every megabyte (socket reads, the IMAP
 * literal, the object-store chunk, the NATS write buffer) whose memory lives outside V8's heap.
 * Their JavaScript wrappers are tiny, so the heap never fills enough to trigger a collection and V8
 * only reacts once tens of megabytes of such external memory have piled up (measured: up to 41 MB
 * of live ArrayBuffers while a 40 MB message streamed, against 10–14 MB with this). Started with
 * `--expose-gc` (as `pnpm start`, the image and the chart do), the poller asks for a scavenge of
 * the young generation — well under a millisecond, the heap is small — once per object-store chunk
 * and once at the end, which frees those buffers while they are still young. Without the flag
 * nothing changes but the memory figure.
 */
const COLLECT_EVERY_BYTES = RAW_CHUNK_BYTES;
const collectYoung = (globalThis as { gc?: (options: { type: "minor" }) => void }).gc;

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
  let sinceCollect = 0;
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
      sinceCollect += chunk.length;
      if (collectYoung && sinceCollect >= COLLECT_EVERY_BYTES) {
        sinceCollect = 0;
        collectYoung({ type: "minor" });
      }
      done(null, chunk);
    },
  });
  source.on("error", (e) => meter.destroy(e));
  try {
    await store.put({ name, options: { max_chunk_size: RAW_CHUNK_BYTES } }, Readable.toWeb(source.pipe(meter)) as ReadableStream<Uint8Array>);
  } finally {
    clearTimeout(timer);
    collectYoung?.({ type: "minor" });
  }
  return { size, sha256: hash.digest("hex") };
}
