import { createHash } from "node:crypto";
import type { KV } from "@postroom/nats-kit";

/** One message key recorded under a fingerprint, with the UIDVALIDITY it was read under. */
export interface IndexedKey {
  key: string;
  uidValidity: number;
}

/**
 * The second signal behind the UID key (lessons-from-peers 2 and 10): SHA-256 of the Message-ID
 * (empty when absent) and the raw message's SHA-256. Only used to re-map a folder whose
 * UIDVALIDITY changed; in normal operation the UID alone decides, so two identical messages that
 * really arrived twice are both ingested.
 */
export function fingerprint(messageId: string | undefined, rawSha256: string): string {
  return createHash("sha256").update(`${messageId?.trim() ?? ""}\u0000${rawSha256}`).digest("hex");
}

export type RemapDecision = "done" | "mapped" | "new";

/**
 * What to do with a message met while re-mapping a folder after a UIDVALIDITY change. Pure.
 *
 * - "done": this very key was handled before (published, or mapped before a crash).
 * - "mapped": an earlier copy (under an older UIDVALIDITY) was already published and not yet
 *   matched to a message of this UIDVALIDITY: it is the same message under a new UID, so it is
 *   not offered again.
 * - "new": no unmatched earlier copy, so it was never published (it arrived during the change, or
 *   was above the old cursor): publish it, so nothing is skipped.
 *
 * Counting copies (rather than "any earlier key exists") keeps two identical messages as two.
 */
export function remapDecision(entries: IndexedKey[], key: string, uidValidity: number): RemapDecision {
  if (entries.some((e) => e.key === key)) return "done";
  const earlier = entries.filter((e) => e.uidValidity !== uidValidity).length;
  const current = entries.filter((e) => e.uidValidity === uidValidity).length;
  return earlier > current ? "mapped" : "new";
}

/** The per-folder index in the `ingested` KV bucket: fingerprint → message keys. */
export class IngestedIndex {
  constructor(
    private readonly kv: KV,
    /** `<tenant>.<mailbox>.<folder as base64url>`. */
    private readonly prefix: string,
  ) {}

  async entries(fp: string): Promise<IndexedKey[]> {
    const e = await this.kv.get(`${this.prefix}.${fp}`);
    return e?.value.length ? ((e.json() as { entries: IndexedKey[] }).entries ?? []) : [];
  }

  /** Adds a key (compare-and-set, retried: the commit consumer and the reader never race, but be safe). */
  async add(fp: string, entry: IndexedKey): Promise<void> {
    const k = `${this.prefix}.${fp}`;
    // The usual case is a fingerprint never seen: one round trip.
    try {
      await this.kv.create(k, JSON.stringify({ version: "v1", entries: [entry] }));
      return;
    } catch {
      // exists: append below
    }
    for (let attempt = 0; ; attempt++) {
      const e = await this.kv.get(k);
      const entries: IndexedKey[] = e?.value.length ? ((e.json() as { entries: IndexedKey[] }).entries ?? []) : [];
      if (entries.some((x) => x.key === entry.key)) return;
      const value = JSON.stringify({ version: "v1", entries: [...entries, entry] });
      try {
        if (e?.value.length) await this.kv.update(k, value, e.revision);
        else await this.kv.create(k, value);
        return;
      } catch (error) {
        if (attempt >= 5) throw error;
      }
    }
  }
}
