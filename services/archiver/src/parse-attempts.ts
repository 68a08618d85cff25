import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The folder under an archive root where unfinished parse attempts are counted. */
export const ATTEMPTS_DIR = ".parse-attempts";

/**
 * Counts parse attempts that started and never finished, per message, on disk. A worker's heap
 * limit does not always contain an out-of-memory: on Node 20 V8 sometimes aborts the whole
 * process instead (seen here with a 24 MB text body and heap limits of 32 and 128 MiB), and a
 * native crash in a parser dependency would do the same. The message is then redelivered and
 * would crash the archiver again, forever. With this count, the third attempt skips parsing and
 * archives the message raw with a parse error: the pipeline moves on and nothing is lost.
 */
export class ParseAttempts {
  readonly #dir: string;

  constructor(root: string) {
    this.#dir = join(root, ATTEMPTS_DIR);
  }

  /** Records the start of an attempt; returns how many earlier attempts never finished. */
  async begin(messageKey: string): Promise<number> {
    const file = this.#file(messageKey);
    const earlier = await readFile(file, "utf8").then((s) => Number.parseInt(s, 10) || 0, () => 0);
    await mkdir(this.#dir, { recursive: true });
    await writeFile(file, String(earlier + 1));
    return earlier;
  }

  /** The attempt finished (whatever its outcome). */
  async end(messageKey: string): Promise<void> {
    await rm(this.#file(messageKey), { force: true });
  }

  #file(messageKey: string): string {
    return join(this.#dir, createHash("sha256").update(messageKey).digest("hex").slice(0, 32));
  }
}

/** Attempts that never finished after which a message is archived without parsing. */
export const MAX_UNFINISHED_PARSES = 2;
