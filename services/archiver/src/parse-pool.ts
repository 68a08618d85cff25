import { mkdir, rm } from "node:fs/promises";
import { Worker } from "node:worker_threads";
import { defaultParseLimits, type ParseLimits, type ParseOutcome } from "./parse.js";

interface Job {
  emlPath: string;
  partsDir: string;
  resolve: (outcome: ParseOutcome) => void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
  timer: NodeJS.Timeout | undefined;
}

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
  readonly #slots = new Set<Slot>();
  readonly #queue: Job[] = [];
  #stopped = false;

  constructor(limits: Partial<ParseLimits> = {}) {
    this.#limits = { ...defaultParseLimits, ...limits };
  }

  get limits(): ParseLimits {
    return this.#limits;
  }

  /** Parses `emlPath` (of `size` bytes), writing its parts into `partsDir`. */
  async parse(emlPath: string, partsDir: string, size: number): Promise<ParseOutcome> {
    if (size > this.#limits.maxBytes) {
      return { ok: false, error: `message of ${size} bytes exceeds the parse limit of ${this.#limits.maxBytes} bytes`, timedOut: false };
    }
    if (this.#stopped) return { ok: false, error: "parser stopped", timedOut: false, stopped: true };
    return new Promise<ParseOutcome>((resolve) => {
      this.#queue.push({ emlPath, partsDir, resolve });
      this.#dispatch();
    });
  }

  /** Terminates every worker; queued and running parses end as parse errors. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const job of this.#queue.splice(0)) job.resolve({ ok: false, error: "parser stopped", timedOut: false, stopped: true });
    await Promise.all([...this.#slots].map((s) => this.#retire(s, { ok: false, error: "parser stopped", timedOut: false, stopped: true })));
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let slot = [...this.#slots].find((s) => !s.job);
      if (!slot) {
        if (this.#slots.size >= this.#limits.workers) return;
        slot = this.#spawn();
      }
      const job = this.#queue.shift()!;
      slot.job = job;
      slot.timer = setTimeout(() => {
        void this.#retire(slot, { ok: false, error: `parsing took longer than ${this.#limits.timeoutMs} ms`, timedOut: true }, true);
      }, this.#limits.timeoutMs);
      slot.worker.postMessage({ emlPath: job.emlPath, partsDir: job.partsDir });
    }
  }

  #spawn(): Slot {
    const worker = startWorker(this.#limits.maxMemoryMb);
    const slot: Slot = { worker, job: undefined, timer: undefined };
    worker.on("message", (outcome: ParseOutcome) => {
      const job = slot.job;
      clearTimeout(slot.timer);
      slot.job = undefined;
      job?.resolve(outcome);
      this.#dispatch();
    });
    // A worker that dies (out of memory, a crash in native code) fails only the message it held.
    const died = (reason: string) => {
      if (!this.#slots.has(slot)) return;
      void this.#retire(slot, { ok: false, error: `parser failed: ${reason}`, timedOut: false }, true);
    };
    worker.on("error", (error) => died(error.message));
    worker.on("exit", (code) => died(`worker exited with code ${code}`));
    // The pool must not keep the process alive on its own.
    worker.unref();
    this.#slots.add(slot);
    return slot;
  }

  async #retire(slot: Slot, outcome: ParseOutcome, cleanParts = false): Promise<void> {
    if (!this.#slots.delete(slot)) return;
    clearTimeout(slot.timer);
    const job = slot.job;
    slot.job = undefined;
    await slot.worker.terminate().catch(() => undefined);
    if (job) {
      // Parts the worker wrote before it was stopped are incomplete: drop them all, so that a
      // message either has all its parts or (with a parse error) none.
      if (cleanParts) await rm(job.partsDir, { recursive: true, force: true }).then(() => mkdir(job.partsDir, { recursive: true }));
      job.resolve(outcome);
    }
    if (!this.#stopped) this.#dispatch();
  }
}

/**
 * Under `--conditions=source` (tests, `postroom up`) this module is TypeScript run by tsx, whose
 * loader hooks are not inherited by worker threads on Node 20 (the worker fails with "Unknown file
 * extension .ts"); the worker then registers tsx itself before importing the TypeScript entry.
 * Built code starts the compiled .js worker directly.
 */
function startWorker(maxMemoryMb: number): Worker {
  const resourceLimits = { maxOldGenerationSizeMb: maxMemoryMb };
  if (import.meta.url.endsWith(".ts")) {
    const tsx = import.meta.resolve("tsx/esm/api");
    const entry = new URL("./parse-worker.ts", import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(boot, { eval: true, resourceLimits });
  }
  return new Worker(new URL("./parse-worker.js", import.meta.url), { resourceLimits });
}
