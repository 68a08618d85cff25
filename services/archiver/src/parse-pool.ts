import { mkdir, open, rm } from "node:fs/promises";
import { WorkerLane } from "@postroom/runtime";
import { defaultParseLimits, type ParseLimits, type ParseOutcome } from "./parse.js";

/**
 * Parses messages in worker threads so that a slow or hostile message never blocks the archiver's
 * event loop (NATS heartbeats, acks, other messages). Each parse has a deadline and each worker a
 * heap limit; a worker that overruns either is terminated and replaced, and the message is
 * reported as a parse error — the caller archives it raw. Never rejects.
 *
 * A pool rather than one worker per message: starting a worker (and loading mailparser in it)
 * costs tens of milliseconds, more than parsing a typical message.
 */
export class ParsePool {
  readonly #limits: ParseLimits;
  readonly #lane: WorkerLane<{ emlPath: string; partsDir: string; fd: number }, ParseOutcome>;
  #stopped = false;

  constructor(limits: Partial<ParseLimits> = {}) {
    this.#limits = { ...defaultParseLimits, ...limits };
    this.#lane = new WorkerLane({ callerUrl: import.meta.url, name: "parse-worker", size: this.#limits.workers, maxMemoryMb: this.#limits.maxMemoryMb });
  }

  get limits(): ParseLimits {
    return this.#limits;
  }

  /** Parses `emlPath` (of `size` bytes), writing its parts into `partsDir`. */
  async parse(emlPath: string, partsDir: string, size: number): Promise<ParseOutcome> {
    if (size > this.#limits.maxBytes) {
      return { ok: false, error: `message of ${size} bytes exceeds the parse limit of ${this.#limits.maxBytes} bytes`, timedOut: false };
    }
    if (this.#stopped) return stoppedOutcome;
    // The file is opened here and closed here once the worker is done with it or gone: a worker
    // terminated mid-parse would leave its own descriptor open for the archiver's lifetime.
    const file = await open(emlPath, "r");
    try {
      // The time limit runs from when a worker takes the message, not while it waits for one.
      const result = await this.#lane.run({ emlPath, partsDir, fd: file.fd }, { timeoutMs: this.#limits.timeoutMs });
      if (result.ok) return result.answer;
      if (result.reason === "stopped") {
        await result.terminated;
        return stoppedOutcome;
      }
      // Parts the worker wrote before it was stopped are incomplete: once it is gone, drop them
      // all, so that a message either has all its parts or (with a parse error) none.
      await result.terminated;
      await rm(partsDir, { recursive: true, force: true }).then(() => mkdir(partsDir, { recursive: true }));
      return result.reason === "timeout"
        ? { ok: false, error: `parsing took longer than ${this.#limits.timeoutMs} ms`, timedOut: true }
        : { ok: false, error: `parser failed: ${result.detail}`, timedOut: false };
    } finally {
      await file.close();
    }
  }

  /** Terminates every worker; queued and running parses end as parse errors. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#lane.stop();
  }
}

const stoppedOutcome: ParseOutcome = { ok: false, error: "parser stopped", timedOut: false, stopped: true };
