import type { AcdProblem, AcdState, AcdStatus, Names } from "@postroom/contracts";
import type { KV } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";

/**
 * The one writer of the ACD status (`AcdStatus` in @postroom/contracts) that `postroom status`
 * shows: one `AcdStatusReporter` per tenant. The bridge and the ACD adapters report into it —
 * connection state, offers held back, unanswered emails, configuration and protocol problems —
 * and it keeps the tenant's entry in the acd-status KV bucket up to date.
 *
 * Writes are coalesced: any number of changes in one turn of the event loop become one KV put,
 * and at most one put is in flight (the newest state wins), so a burst of 50 held-back offers
 * does not become 50 writes. Without a KV (tests of one part alone) it only keeps the snapshot.
 */
export interface AcdStatusReporterOptions {
  tenant: string;
  acd: AcdStatus["acd"];
  alertAfterSeconds: number;
  kv?: KV | undefined;
  names: Names;
  logger: Logger;
  clock?: () => number;
}

/** A problem as an adapter reports it; the reporter counts repeats and stamps the time. */
export type ProblemReport = Omit<AcdProblem, "count" | "lastAt">;

export class AcdStatusReporter {
  #status: AcdStatus;
  readonly #now: () => number;
  #dirty = false;
  #writing: Promise<void> | undefined;
  /** Counters for the metrics work. */
  readonly stats = { writes: 0, writeErrors: 0, stateChanges: 0 };

  constructor(private readonly o: AcdStatusReporterOptions) {
    this.#now = o.clock ?? Date.now;
    const at = this.#iso();
    this.#status = {
      version: "v1",
      tenant: o.tenant,
      acd: o.acd,
      // The built-in distributor runs in this process: it is reachable whenever we are.
      state: o.acd === "builtin" ? "connected" : "connecting",
      since: at,
      lastError: null,
      heldBack: 0,
      unanswered: { count: 0, oldestAt: null, alertAfterSeconds: o.alertAfterSeconds },
      problems: [],
      updatedAt: at,
    };
  }

  /** The current status (a copy). */
  snapshot(): AcdStatus {
    return structuredClone(this.#status);
  }

  /**
   * The ACD's connection state. `error` is kept as the last error (message and fix, never a
   * secret); a change to `connected` keeps the previous error visible with its time, so an
   * operator still sees why it was unreachable.
   */
  state(state: AcdState, error?: { message: string; fix?: string | null }): void {
    const s = this.#status;
    if (error) s.lastError = { message: error.message, fix: error.fix ?? null, at: this.#iso() };
    if (s.state !== state) {
      s.state = state;
      s.since = this.#iso();
      this.stats.stateChanges++;
    }
    this.#changed();
  }

  /** Offers the ACD has not taken yet because it is unreachable. */
  heldBack(count: number): void {
    if (this.#status.heldBack === count) return;
    this.#status.heldBack = count;
    this.#changed();
  }

  /** Unanswered emails not yet ended (from PostgreSQL): how many, and the oldest's first time. */
  unanswered(count: number, oldestAt: Date | null): void {
    const u = this.#status.unanswered;
    const oldest = oldestAt ? oldestAt.toISOString() : null;
    if (u.count === count && u.oldestAt === oldest) return;
    u.count = count;
    u.oldestAt = oldest;
    this.#changed();
  }

  /** A configuration or protocol problem happened (again): counted per kind and subject. */
  problem(p: ProblemReport): void {
    const existing = this.#status.problems.find((x) => x.kind === p.kind && x.subject === p.subject);
    const at = this.#iso();
    if (existing) Object.assign(existing, { detail: p.detail, fix: p.fix, count: existing.count + 1, lastAt: at });
    else this.#status.problems.push({ ...p, count: 1, lastAt: at });
    this.#changed();
  }

  /** Drops problems of a kind (and subject, when given) once they are resolved. */
  clearProblems(kind: string, subject?: string): void {
    const before = this.#status.problems.length;
    this.#status.problems = this.#status.problems.filter((x) => x.kind !== kind || (subject !== undefined && x.subject !== subject));
    if (this.#status.problems.length !== before) this.#changed();
  }

  /** Resolves when every change reported so far is in the KV bucket (or failed to get there). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  #changed(): void {
    this.#status.updatedAt = this.#iso();
    this.#dirty = true;
    if (!this.#writing) this.#writing = this.#drain();
  }

  async #drain(): Promise<void> {
    // Let the rest of this turn's changes land first: one put for all of them.
    await Promise.resolve();
    try {
      while (this.#dirty) {
        this.#dirty = false;
        if (!this.o.kv) continue;
        try {
          await this.o.kv.put(this.o.names.acdStatusKey(this.o.tenant), JSON.stringify(this.#status));
          this.stats.writes++;
        } catch (error) {
          // Status is advisory: a NATS hiccup must not stop sessions. The next change writes again.
          this.stats.writeErrors++;
          this.o.logger.warn({ tenant: this.o.tenant, problem: (error as Error).message }, "ACD status not written");
        }
      }
    } finally {
      this.#writing = undefined;
    }
  }

  #iso(): string {
    return new Date(this.#now()).toISOString();
  }
}
