import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
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
      : source.protocol === "pop3"
        ? `pop3-${hash(source.uidl).slice(0, 24)}`
        : `graph-${hash(source.id).slice(0, 24)}`;
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
  #bytes = 0;
  private constructor(readonly path: string) {}

  /** Bytes written into this folder so far (what it will add to the archive's usage). */
  get bytes(): number {
    return this.#bytes;
  }

  get partsPath(): string {
    return join(this.path, "parts");
  }

  /** Counts bytes written into the folder by someone else (the parser worker writes the parts). */
  addBytes(n: number): void {
    this.#bytes += n;
  }

  static async create(root: string): Promise<StagedFolder> {
    const path = join(root, ".tmp", `${STAGING_OWNER}~${Date.now()}-${randomBytes(6).toString("hex")}`);
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
    this.#bytes += size;
    return { size, sha256: h.digest("hex") };
  }

  async writeFile(name: string, data: string | Uint8Array): Promise<void> {
    const file = join(this.path, name);
    await writeFile(file, data);
    await fsyncFile(file);
    this.#bytes += typeof data === "string" ? Buffer.byteLength(data) : data.byteLength;
  }

  /**
   * Moves the folder into place. A folder already there is from an attempt that crashed before its
   * database commit: same message, replaced.
   *
   * Durability, before the caller's database commit: every file was fsynced as it was written;
   * the folder's own entries (message.eml, meta.json, parts/) are fsynced here, and the parts
   * folder's entries only when it has any — an empty folder has no entries to make durable, and
   * its own name is an entry of the message folder, fsynced here. The rename is made durable by
   * fsyncing the parent (the day folder). With `parents`, that parent fsync is left to the caller,
   * who collects the parents of a whole batch and fsyncs each once (`syncFolders`) before its
   * COMMIT: a row is never committed while its folder's name could still vanish in a crash. The
   * staging folder `.tmp` is not fsynced after the rename: if a crash forgot the removal, the
   * folder would reappear there as well, and `.tmp` is emptied at every start.
   */
  async commit(target: string, options: { parents?: Set<string>; partsEmpty?: boolean } = {}): Promise<void> {
    if (!options.partsEmpty) await fsyncFile(join(this.path, "parts"));
    await fsyncFile(this.path);
    const parent = join(target, "..");
    // Folders created here (a new day, month, mailbox) are entries of their own parents: those
    // are fsynced too, or a crash could lose the day folder along with everything in it.
    const created = await mkdir(parent, { recursive: true });
    const touched = [parent];
    if (created !== undefined) for (let d = parent; d.length >= created.length && d !== dirname(d); d = dirname(d)) touched.push(dirname(d));
    await rm(target, { recursive: true, force: true });
    await rename(this.path, target);
    if (options.parents) for (const t of touched) options.parents.add(t);
    else await syncFolders(touched);
  }

  async discard(): Promise<void> {
    await rm(this.path, { recursive: true, force: true });
  }
}

/** Fsyncs each folder once, side by side (a batch's parents; the filesystem merges them into few journal commits). */
export async function syncFolders(folders: Iterable<string>): Promise<void> {
  await Promise.all([...new Set(folders)].map((f) => fsyncFile(f)));
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * How long a staging folder may go untouched before it counts as left behind by a crash, whoever
 * made it. A live one is written to every few seconds (a 25 MB message's read deadline is under 5
 * minutes).
 */
export const STALE_STAGING_MS = 15 * 60_000;

/**
 * Whose staging folders these are: host, process id and a token of this process's own, so that a
 * later process with the same pid (a container's pid 1 after a restart) is told apart.
 */
const STAGING_OWNER = `${encodeURIComponent(hostname())}~${process.pid}~${randomBytes(4).toString("hex")}`;

/** Whether the process that made a staging folder named `entry` is gone, as far as this host can tell. */
function ownerGone(entry: string): boolean {
  const [host, pid, token] = entry.split("~");
  if (host === undefined || pid === undefined || token === undefined || !/^\d+$/.test(pid)) return false;
  let from: string;
  try {
    from = decodeURIComponent(host);
  } catch {
    return false;
  }
  if (from !== hostname()) return false; // another host's: only staleness decides
  if (`${host}~${pid}~${token}` === STAGING_OWNER) return false;
  if (Number(pid) === process.pid) return true; // our pid, an earlier process's token
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/**
 * Removes folders left half-assembled by a crash: those of a process on this host that is gone,
 * and anyone's that nothing has written to for `staleMs`. Replicas that share an archive folder
 * share its `.tmp`, so an archiver starting must not take the staging folders another replica is
 * writing at that moment. (Found by the chaos run: a restarted archiver emptied `.tmp` under its
 * twin, whose messages lost their files between write and rename, and then failed its own start
 * with ENOTEMPTY as the twin went on writing.)
 */
export async function cleanStaging(root: string, options: { staleMs?: number; now?: number } = {}): Promise<void> {
  const staging = join(root, ".tmp");
  await mkdir(staging, { recursive: true });
  const before = (options.now ?? Date.now()) - (options.staleMs ?? STALE_STAGING_MS);
  for (const entry of await readdir(staging)) {
    const folder = join(staging, entry);
    if (ownerGone(entry) || (await newestChange(folder)) < before) await rm(folder, { recursive: true, force: true });
  }
}

/** The latest modification time of a folder and everything in it (0 when it is already gone). */
async function newestChange(path: string): Promise<number> {
  let newest = 0;
  const walk = async (p: string): Promise<void> => {
    const st = await stat(p).catch(() => undefined);
    if (!st) return;
    newest = Math.max(newest, st.mtimeMs);
    if (st.isDirectory()) for (const e of await readdir(p).catch(() => [] as string[])) await walk(join(p, e));
  };
  await walk(path);
  return newest;
}

/**
 * Bytes of every file under the archive root, staging and bookkeeping excluded: the archive's usage as the quota
 * counts it. Apparent sizes, not allocated blocks, so the figure does not depend on the
 * filesystem's block size and an operator can check it with `du -sb --apparent-size`.
 */
export async function directoryBytes(root: string, options: { skip?: (dir: string) => boolean; entered?: Set<string> } = {}): Promise<number> {
  let total = 0;
  const walk = async (dir: string): Promise<void> => {
    options.entered?.add(dir);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      // A folder removed while we walk (retention, a replaced message) simply counts as empty.
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      throw error;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (dir === root && (e.name === ".tmp" || e.name === ".parse-attempts")) continue;
        if (options.skip?.(p)) continue;
        await walk(p);
      } else if (e.isFile()) {
        total += await stat(p).then((s) => s.size, () => 0);
      }
    }
  };
  await walk(root);
  return total;
}

/** Free space an unprivileged writer may use, and the filesystem's size, in bytes. */
export async function filesystemSpace(path: string): Promise<{ freeBytes: number; totalBytes: number }> {
  const s = await statfs(path);
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
}

/** True for write errors that mean "the disk or the user's disk quota is full". */
export function isDiskFull(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}
