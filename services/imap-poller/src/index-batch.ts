import type { IndexedKey, IngestedIndex } from "./ingested-index.js";

/**
 * Entries for the `ingested` index collected while their events are acknowledged, written together:
 * the common case (a fingerprint never seen) is one `create` each, all of them on the wire at once
 * instead of one awaited round trip per message. Each entry's `done` runs once it is written, so
 * the cursor never passes a message the index does not know (a UIDVALIDITY change after a crash
 * would otherwise offer it again).
 */
export class IndexBatch {
  #entries: { fp: string; entry: IndexedKey; done: () => void }[] = [];

  constructor(private readonly index: IngestedIndex) {}

  add(fp: string, entry: IndexedKey, done: () => void): void {
    this.#entries.push({ fp, entry, done });
  }

  /** Writes what was collected; entries that failed stay not done (their UIDs are re-read). */
  async write(): Promise<void> {
    const entries = this.#entries;
    this.#entries = [];
    if (entries.length === 0) return;
    // Two events with the same fingerprint in one batch (identical messages) must not race each
    // other's compare-and-set: those go one after another.
    const byFp = new Map<string, typeof entries>();
    for (const e of entries) byFp.set(e.fp, [...(byFp.get(e.fp) ?? []), e]);
    const results = await Promise.allSettled(
      [...byFp.values()].map(async (group) => {
        for (const e of group) {
          await this.index.add(e.fp, e.entry);
          e.done();
        }
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }
}
