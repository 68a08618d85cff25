import { WorkerLane } from "@postroom/runtime";

/** Budgets for turning a customer's HTML into what the desktop shows. */
export interface HtmlLimits {
  /** Sanitiser threads (default 2: the machine's other core stays with the API and NATS). */
  workers: number;
  /** Longest an email's HTML may take from the request to the sanitised result, queueing included (default 1500 ms). */
  timeoutMs: number;
  /** How much longer a text rendering (for an email without a text part) may take (default 1000 ms; linear, far less in practice). */
  textTimeoutMs: number;
  /** HTML larger than this is not sanitised at all (default 2 MiB); the agent gets the text. */
  maxBytes: number;
  /** Sanitised results kept in memory, by message (default 200). */
  cacheEntries: number;
  /** Heap of each thread (default 256 MB): a hostile body must not take the process with it. */
  maxMemoryMb: number;
}

export const defaultHtmlLimits: HtmlLimits = { workers: 2, timeoutMs: 1500, textTimeoutMs: 1000, maxBytes: 2 * 1024 * 1024, cacheEntries: 200, maxMemoryMb: 256 };

/**
 * The sanitised HTML, or null with the reason the agent is shown text instead and, when asked
 * for, a text rendering of the HTML (for an email without a text part of its own).
 */
export type HtmlOutcome = { html: string; notice: null; text: null } | { html: null; notice: string; text: string | null };

/**
 * Sanitises emails' HTML in worker threads with a time and size budget, so one heavy body
 * (100,000 unclosed `<b>` took 7-10 s in sanitize-html, a 20,000-cell table 3-4 s) never holds
 * up the agent API: its event loop only queues the job and answers other requests meanwhile. A job
 * that is not done by its deadline — counted from the request, so a queue of heavy bodies cannot
 * stretch one view beyond it — ends with a notice, and the thread running it is terminated and
 * replaced. For an email without a text part, a text rendering of the HTML is made at the same
 * time on a thread of its own (linear work, never stopped part way), so the agent gets something
 * to read. Results, including "over budget", are kept per message: a second look at a heavy email
 * does not pay again, and concurrent views of one email share one job. Never rejects.
 *
 * Chosen over sanitising once at archive time and storing the result: the allowlist and the
 * attachment URLs belong to the desktop and change with it, stored results would need a
 * migration of every archived message for each change, and the archiver would take on the
 * same hostile input on its own critical path. Rejected: a time check inside sanitize-html (it
 * has no hook to stop part way) and a cheaper regex pass first (which is where sanitisers fail).
 */
export class HtmlPool {
  readonly limits: HtmlLimits;
  readonly #sanitisers: WorkerLane<{ html: string; inline: Record<string, string>; sanitise: true }, { html: string }>;
  readonly #renderer: WorkerLane<{ html: string; text: true }, { text: string }>;
  readonly #cache = new Map<string, Promise<HtmlOutcome>>();
  #stopped = false;
  /** Counters for the metrics work. */
  readonly stats = { sanitised: 0, overTime: 0, overSize: 0, cacheHits: 0 };

  constructor(limits: Partial<HtmlLimits> = {}) {
    this.limits = { ...defaultHtmlLimits, ...limits };
    const worker = { callerUrl: import.meta.url, name: "html-worker", maxMemoryMb: this.limits.maxMemoryMb };
    this.#sanitisers = new WorkerLane({ ...worker, size: this.limits.workers });
    // A thread of its own, so a text rendering never waits behind a heavy body.
    this.#renderer = new WorkerLane({ ...worker, size: 1 });
  }

  /** Starts the threads now, so that the first emails do not wait for a thread to load. */
  warm(): void {
    this.#sanitisers.warm();
    this.#renderer.warm();
  }

  /**
   * The sanitised form of `html`; `key` names the message and view (the same key must mean the
   * same html and inline map), `inline` maps Content-IDs to our attachment URLs, `wantText` asks
   * for a text rendering should the HTML not be shown.
   */
  render(key: string, html: string, inline: Record<string, string>, wantText = false): Promise<HtmlOutcome> {
    const cached = this.#cache.get(key);
    if (cached) {
      this.stats.cacheHits++;
      // Most recently used last: the Map's order is the eviction order.
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached;
    }
    const outcome = this.#run(html, inline, wantText);
    this.#cache.set(key, outcome);
    while (this.#cache.size > this.limits.cacheEntries) this.#cache.delete(this.#cache.keys().next().value!);
    return outcome;
  }

  /** Terminates the threads; queued and running jobs end with a notice. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([this.#sanitisers.stop(), this.#renderer.stop()]);
  }

  async #run(html: string, inline: Record<string, string>, wantText: boolean): Promise<HtmlOutcome> {
    if (this.#stopped) return { html: null, notice: "The agent API is stopping; this is the email's text.", text: null };
    const started = performance.now();
    const bytes = Buffer.byteLength(html);
    const text = wantText ? this.#renderer.run({ html: html.slice(0, this.limits.maxBytes), text: true }, { deadline: started + this.limits.timeoutMs + this.limits.textTimeoutMs }) : undefined;
    const asText = async (notice: string): Promise<HtmlOutcome> => {
      const rendered = await text;
      return { html: null, notice, text: rendered?.ok ? rendered.answer.text : null };
    };
    if (bytes > this.limits.maxBytes) {
      this.stats.overSize++;
      return asText(`The HTML of this email (${bytes} bytes) is over the ${this.limits.maxBytes}-byte limit for showing it; this is its text.`);
    }
    const done = await this.#sanitisers.run({ html, inline, sanitise: true }, { deadline: started + this.limits.timeoutMs });
    if (done.ok) {
      this.stats.sanitised++;
      return { html: done.answer.html, notice: null, text: null };
    }
    if (done.reason === "stopped") return { html: null, notice: "The agent API is stopping; this is the email's text.", text: null };
    // A thread that died (out of its heap limit) fails only this email.
    if (done.reason === "died") return asText(`The HTML of this email could not be made safe (${done.detail}); this is its text.`);
    this.stats.overTime++;
    return asText(`The HTML of this email took longer than ${this.limits.timeoutMs} ms to make safe; this is its text.`);
  }
}
