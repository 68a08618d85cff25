import { Worker, type ResourceLimits } from "node:worker_threads";

/**
 * Starts the worker module `name` that sits beside the calling module (`callerUrl` is its
 * `import.meta.url`): `<name>.js` in built code, `<name>.ts` under `--conditions=source` (tests,
 * `postroom up`). tsx's loader hooks are not inherited by worker threads on Node 20 (the worker
 * fails with "Unknown file extension .ts"), so a TypeScript worker registers tsx itself before
 * importing its entry. Used by the archiver's parser pool and asd-bridge's HTML pool.
 */
export function startModuleWorker(callerUrl: string, name: string, resourceLimits?: ResourceLimits): Worker {
  const options = resourceLimits ? { resourceLimits } : {};
  if (callerUrl.endsWith(".ts")) {
    const tsx = import.meta.resolve("tsx/esm/api");
    const entry = new URL(`./${name}.ts`, callerUrl).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(boot, { eval: true, ...options });
  }
  return new Worker(new URL(`./${name}.js`, callerUrl), options);
}

/** How a job on a {@link WorkerLane} ended. */
export type LaneResult<T> =
  | { ok: true; answer: T }
  /** timeout: over its time (the thread was replaced); died: the thread crashed (out of memory…); stopped: the lane is stopping. */
  | {
      ok: false;
      reason: "timeout" | "died" | "stopped";
      detail: string;
      /**
       * Resolves once the thread that held the job is gone (at once for a job that never ran).
       * The job answers without waiting for it: a starved thread can take long to stop. Wait for
       * it before touching what the job was writing.
       */
      terminated: Promise<void>;
    };

export interface WorkerLaneOptions {
  /** `import.meta.url` of the module the worker sits beside. */
  callerUrl: string;
  /** The worker module's name without extension (see {@link startModuleWorker}). */
  name: string;
  /** Threads at most. */
  size: number;
  /** Heap limit of each thread. */
  maxMemoryMb?: number;
}

const done = Promise.resolve();

interface LaneJob {
  message: unknown;
  /** Expires a job with an absolute deadline while it waits in the queue. */
  expiry?: NodeJS.Timeout;
  /** Absolute deadline (performance.now() time), or a time limit counted from when a thread takes the job. */
  limit: { deadline: number } | { timeoutMs: number };
  resolve: (result: LaneResult<unknown>) => void;
}

interface LaneSlot {
  worker: Worker;
  /** Loaded: the worker posted "ready". Jobs go only to ready threads, so loading never counts against a job. */
  ready: boolean;
  job: LaneJob | undefined;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Worker threads that take one job at a time, each with a time limit: a thread still busy when
 * its job's time is up is terminated (and replaced) before the job answers, so whatever it was
 * writing has stopped; a job whose absolute deadline passes while it waits answers at once.
 * A thread that dies fails only the job it held. Never rejects. A worker module posts the string
 * "ready" once it has loaded; only then does it get jobs, so a slow start (libraries loading on a
 * busy machine) is never mistaken for a slow job. Used by the archiver's parser pool
 * and asd-bridge's HTML pool: starting a thread (and loading the libraries in it) costs tens of
 * milliseconds, more than most jobs, hence threads that stay.
 */
export class WorkerLane<Req, Res> {
  readonly #slots = new Set<LaneSlot>();
  readonly #queue: LaneJob[] = [];
  #stopped = false;

  constructor(private readonly o: WorkerLaneOptions) {}

  /** Starts every thread now, so that the first jobs do not wait for one to load. */
  warm(): void {
    while (!this.#stopped && this.#slots.size < this.o.size) this.#spawn();
  }

  run(message: Req, limit: { deadline: number } | { timeoutMs: number }): Promise<LaneResult<Res>> {
    if (this.#stopped) return Promise.resolve({ ok: false, reason: "stopped", detail: "stopping", terminated: done });
    return new Promise((resolve) => {
      const job: LaneJob = { message, limit, resolve: resolve as LaneJob["resolve"] };
      if ("deadline" in limit) {
        job.expiry = setTimeout(() => {
          const at = this.#queue.indexOf(job);
          if (at === -1) return;
          this.#queue.splice(at, 1);
          job.resolve({ ok: false, reason: "timeout", detail: "its time ran out while it waited", terminated: done });
        }, Math.max(0, limit.deadline - performance.now()));
      }
      this.#queue.push(job);
      this.#dispatch();
    });
  }

  /** Terminates every thread; queued and running jobs answer `stopped`. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const job of this.#queue.splice(0)) {
      clearTimeout(job.expiry);
      job.resolve({ ok: false, reason: "stopped", detail: "stopping", terminated: done });
    }
    await Promise.all([...this.#slots].map((s) => this.#retire(s, { reason: "stopped", detail: "stopping" })));
  }

  #dispatch(): void {
    this.#assign();
    this.#holdOpen();
  }

  /**
   * Idle threads must not keep the process alive; a thread with a job, or loading while jobs
   * wait for it, must (nothing else may be holding the event loop open meanwhile).
   */
  #holdOpen(): void {
    for (const s of this.#slots) {
      if (s.job || (!s.ready && this.#queue.length > 0)) s.worker.ref();
      else s.worker.unref();
    }
  }

  #assign(): void {
    while (this.#queue.length > 0) {
      const slot = [...this.#slots].find((s) => s.ready && !s.job);
      if (!slot) {
        // The job waits for a thread to load (or to come free); spawning is up to the size.
        if (this.#slots.size < this.o.size) this.#spawn();
        return;
      }
      const job = this.#queue.shift()!;
      clearTimeout(job.expiry);
      const left = "deadline" in job.limit ? job.limit.deadline - performance.now() : job.limit.timeoutMs;
      if (left <= 0) {
        job.resolve({ ok: false, reason: "timeout", detail: "its time ran out while it waited", terminated: done });
        continue;
      }
      const s = slot;
      s.job = job;
      s.timer = setTimeout(() => void this.#retire(s, { reason: "timeout", detail: `still busy after ${Math.round(left)} ms` }), left);
      s.worker.postMessage(job.message);
    }
  }

  #spawn(): LaneSlot {
    const worker = startModuleWorker(this.o.callerUrl, this.o.name, this.o.maxMemoryMb ? { maxOldGenerationSizeMb: this.o.maxMemoryMb } : undefined);
    const slot: LaneSlot = { worker, ready: false, job: undefined, timer: undefined };
    worker.on("message", (answer: unknown) => {
      if (!slot.ready && answer === "ready") {
        slot.ready = true;
        this.#dispatch();
        return;
      }
      const job = slot.job;
      clearTimeout(slot.timer);
      slot.job = undefined;
      job?.resolve({ ok: true, answer });
      this.#dispatch();
    });
    const died = (detail: string) => {
      if (this.#slots.has(slot)) void this.#retire(slot, { reason: "died", detail });
    };
    worker.on("error", (error) => died(error.message));
    worker.on("exit", (code) => died(`worker exited with code ${code}`));
    this.#slots.add(slot);
    this.#holdOpen();
    return slot;
  }

  async #retire(slot: LaneSlot, result: { reason: "timeout" | "died" | "stopped"; detail: string }): Promise<void> {
    if (!this.#slots.delete(slot)) return;
    clearTimeout(slot.timer);
    const job = slot.job;
    slot.job = undefined;
    // The replacement starts loading at once, while this one is terminated.
    if (!this.#stopped) this.warm();
    const terminated = slot.worker.terminate().then(
      () => undefined,
      () => undefined,
    );
    job?.resolve({ ok: false, ...result, terminated });
    if (!this.#stopped) this.#dispatch();
    await terminated;
  }
}
