import { appendFileSync, mkdirSync, readdirSync, renameSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";

export interface TranscriptOptions {
  /** Folder for transcripts (the config's logs.path). */
  dir: string;
  /** Name prefix, e.g. `softdial-acme`. */
  prefix: string;
  /** A file is rolled over to `.1` past this size. */
  maxBytes?: number;
  /** How many connection transcripts are kept; older ones are deleted. */
  keep?: number;
}

/**
 * Every SDMP frame sent and received on one connection, one line each, for support: a real
 * controller's behaviour is only known from such transcripts. One file per connection, rolled
 * over by size, the oldest connections' files deleted. Frames carry sender addresses and a
 * reference to the email, never a secret (the SDMP socket has no login).
 *
 * Writes are synchronous on purpose: frames are small and rare (a few per email), and a
 * transcript that loses its last lines in a crash is useless exactly when it is needed.
 */
export class Transcript {
  readonly path: string;
  readonly #maxBytes: number;

  constructor(private readonly o: TranscriptOptions, connection: number) {
    mkdirSync(o.dir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    this.path = join(o.dir, `${o.prefix}-${stamp}-c${connection}.log`);
    this.#maxBytes = o.maxBytes ?? 5 * 1024 * 1024;
    this.#prune(o.keep ?? 20);
  }

  write(direction: "sent" | "received" | "note", text: string): void {
    const arrow = direction === "sent" ? ">" : direction === "received" ? "<" : "#";
    try {
      if ((statSync(this.path, { throwIfNoEntry: false })?.size ?? 0) > this.#maxBytes) renameSync(this.path, `${this.path}.1`);
      appendFileSync(this.path, `${new Date().toISOString()} ${arrow} ${text.replace(/\0/g, "")}\n`);
    } catch {
      // A full or read-only disk must not stop sessions; the transcript is for support only.
    }
  }

  #prune(keep: number): void {
    try {
      const files = readdirSync(this.o.dir)
        .filter((f) => f.startsWith(`${this.o.prefix}-`) && f.endsWith(".log"))
        .sort();
      for (const f of files.slice(0, Math.max(0, files.length - keep + 1))) {
        unlinkSync(join(this.o.dir, f));
        try {
          unlinkSync(join(this.o.dir, `${f}.1`));
        } catch {
          // no rolled-over part
        }
      }
    } catch {
      // see write()
    }
  }
}
