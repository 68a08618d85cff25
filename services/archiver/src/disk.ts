import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { pipeline } from "node:stream/promises";
import type { SourceKey } from "@postroom/contracts";

/**
 * The archive's layout on disk, stable and documented in the README:
 *
 *   <archive>/<tenant>/<mailbox>/<yyyy>/<mm>/<dd>/<message folder>/
 *       message.eml      the raw message, byte for byte as fetched
 *       meta.json        parsed metadata, original attachment names
 *       parts/<name>     each attachment and inline part, names sanitized
 *
 * A message folder is assembled under <archive>/.tmp and renamed into place in one step, so a
 * folder in the layout is always complete.
 */
export function messageFolder(root: string, source: SourceKey, receivedAt: Date): string {
  const y = String(receivedAt.getUTCFullYear());
  const m = String(receivedAt.getUTCMonth() + 1).padStart(2, "0");
  const d = String(receivedAt.getUTCDate()).padStart(2, "0");
  const leaf =
    source.protocol === "imap"
      ? `${source.folder === "INBOX" ? "" : `${hash(source.folder).slice(0, 8)}-`}${source.uidValidity}-${source.uid}`
      : `pop3-${hash(source.uidl).slice(0, 24)}`;
  return join(root, source.tenant, source.mailbox, y, m, d, leaf);
}

export function outboundFolder(root: string, tenant: string, mailbox: string, commandId: string, at: Date): string {
  const y = String(at.getUTCFullYear());
  const m = String(at.getUTCMonth() + 1).padStart(2, "0");
  const d = String(at.getUTCDate()).padStart(2, "0");
  return join(root, tenant, mailbox, y, m, d, `sent-${hash(commandId).slice(0, 24)}`);
}

function hash(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

/** A message folder being assembled. */
export class StagedFolder {
  private constructor(readonly path: string) {}

  static async create(root: string): Promise<StagedFolder> {
    const path = join(root, ".tmp", `${Date.now()}-${randomBytes(6).toString("hex")}`);
    await mkdir(join(path, "parts"), { recursive: true });
    return new StagedFolder(path);
  }

  /** Streams bytes into a file, fsyncs it, and returns its size and SHA-256. */
  async writeStream(name: string, source: Readable | ReadableStream<Uint8Array>): Promise<{ size: number; sha256: string }> {
    const h = createHash("sha256");
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    const file = join(this.path, name);
    const input = source instanceof Readable ? source : Readable.fromWeb(source as WebReadableStream<Uint8Array>);
    await pipeline(input, counter, createWriteStream(file));
    await fsyncFile(file);
    return { size, sha256: h.digest("hex") };
  }

  async writeFile(name: string, data: string | Uint8Array): Promise<void> {
    const file = join(this.path, name);
    await writeFile(file, data);
    await fsyncFile(file);
  }

  /** Moves the folder into place. A folder already there is from an attempt that crashed before its database commit: same message, replaced. */
  async commit(target: string): Promise<void> {
    await fsyncFile(join(this.path, "parts"));
    await fsyncFile(this.path);
    await mkdir(join(target, ".."), { recursive: true });
    await rm(target, { recursive: true, force: true });
    await rename(this.path, target);
    await fsyncFile(join(target, ".."));
  }

  async discard(): Promise<void> {
    await rm(this.path, { recursive: true, force: true });
  }
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Removes folders left half-assembled by a crash. */
export async function cleanStaging(root: string): Promise<void> {
  await rm(join(root, ".tmp"), { recursive: true, force: true });
  await mkdir(join(root, ".tmp"), { recursive: true });
}
