import { createHmac, timingSafeEqual } from "node:crypto";
import { PAUSE_MARGIN_MS } from "./pacer.js";

/**
 * The webhook ACD adapter's signing: `X-Postroom-Timestamp` (Unix seconds) and
 * `X-Postroom-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, the same scheme both
 * ways (our POSTs to the ACD, the ACD's callbacks to us). The timestamp inside the MAC stops a
 * captured request from being replayed later; the event id stops it being applied twice within
 * the window.
 */
export const SIGNATURE_HEADER = "x-postroom-signature";
export const TIMESTAMP_HEADER = "x-postroom-timestamp";
/** How far a callback's timestamp may be from our clock. */
export const TOLERANCE_SECONDS = 300;

export function sign(secret: string, timestamp: number, body: string): string {
  return `v1=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

export function verify(secret: string, headers: Record<string, string | string[] | undefined>, body: string, nowSeconds: number): VerifyResult {
  const ts = Number(headers[TIMESTAMP_HEADER]);
  const sig = headers[SIGNATURE_HEADER];
  if (!Number.isInteger(ts) || typeof sig !== "string") return { ok: false, reason: "missing signature or timestamp" };
  if (Math.abs(nowSeconds - ts) > TOLERANCE_SECONDS) return { ok: false, reason: "timestamp outside the allowed window" };
  const expected = Buffer.from(sign(secret, ts, body));
  const given = Buffer.from(sig);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return { ok: false, reason: "bad signature" };
  return { ok: true };
}

/** An offer as the ACD receives it. */
export interface WebhookOffer {
  version: "v1";
  type: "session.offered";
  sessionId: string;
  /**
   * 1 for the first offer of the email; one more for each requeue after the ACD reported it
   * unanswered. The Idempotency-Key is the session id for the first offer and
   * `<sessionId>.<offerNumber>` after, so an ACD that dedupes on the key takes a requeue as new.
   */
  offerNumber: number;
  tenant: string;
  mailbox: string;
  queue: string;
  from: string;
  subject: string;
  offeredAt: string;
  /** Signed, expiring link to the email (headers, text, sanitized HTML, attachment list). */
  emailUrl: string;
  warnings: string[];
}

/** The key an ACD dedupes an offer on: retries and restarts of one offer share it, a requeue does not. */
export function idempotencyKey(offer: Pick<WebhookOffer, "sessionId" | "offerNumber">): string {
  return offer.offerNumber > 1 ? `${offer.sessionId}.${offer.offerNumber}` : offer.sessionId;
}

/** Whether a failed POST is worth another try: network errors, 408, 429 and 5xx are; other 4xx are not. */
export function retryable(status: number | null): boolean {
  return status === null || status === 408 || status === 429 || status >= 500;
}

/**
 * Whether a failure says the ACD itself is down (nothing answered, or it answered 5xx), as
 * opposed to "busy" (408, 429) or "not this one" (other 4xx).
 */
export function acdDown(status: number | null): boolean {
  return status === null || status >= 500;
}

/** Capped exponential backoff with jitter: attempt 1 waits about `initialMs`, doubling up to `maxMs`. */
export function retryDelayMs(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base / 2 + (random() * base) / 2);
}

export interface WebhookDispatcherOptions {
  url: string;
  secret: string;
  /** POSTs in flight at once, across sessions (default 8). */
  concurrency?: number;
  /** Backoff of one offer's retries, and of the probe while the ACD is unreachable. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Deadline of one POST (default 10 s): a hung request becomes a retry, not a stuck worker. */
  timeoutMs?: number;
  /** The mailbox's pause between new sessions (offerPauseSeconds), in ms. */
  pauseMs?: (mailbox: string) => number;
  clock?: () => number;
  random?: () => number;
  /** The ACD took the offer (2xx). */
  onAccepted: (offer: WebhookOffer, attempts: number) => void;
  /** The ACD refused the offer for good (a 4xx other than 408/429): the unanswered policy decides. */
  onRefused: (offer: WebhookOffer, status: number) => void;
  /** The ACD became unreachable (error: why) or answers again. */
  onState: (state: "connected" | "unreachable", error?: { message: string; fix: string }) => void;
  /** One POST failed and will be retried: `timeout`, `unreachable` (no connection) or `http-<code>`. */
  onFailure?: (reason: string) => void;
  /** Offers waiting for the ACD changed (for the status). */
  onHeldBack?: (count: number) => void;
}

interface Pending {
  offer: WebhookOffer;
  /** Order of first arrival: the oldest email goes first. */
  seq: number;
  attempts: number;
  /** Not before this (its own backoff while the ACD answers others). */
  notBefore: number;
}

/**
 * Offers sessions to a webhook ACD: signed POSTs (`sign`) with `Idempotency-Key` = session id,
 * at most `concurrency` in flight across sessions and each with a deadline, so one hung request
 * holds back no other session. An offer is never given up while its email is unanswered:
 *
 * - the ACD answers 2xx: taken (`onAccepted`);
 * - it answers another 4xx than 408/429: refused (`onRefused`), the bridge's unanswered policy;
 * - it fails while it answers others: that offer alone is retried with capped backoff;
 * - nothing answers (connection refused, timeout) or 5xx, and nothing succeeded meanwhile: the
 *   ACD is *unreachable*. Every offer is held back and only one probe — the oldest offer — is
 *   sent, with capped backoff, so an outage of hours costs one request per `maxDelayMs`, not one
 *   per email. When the probe is taken the ACD is connected again and everything held back goes
 *   out, oldest first, within the concurrency and each mailbox's pause.
 *
 * State is in memory; after a restart the bridge enqueues again every session recorded as
 * offered (the ACD dedupes on the idempotency key).
 */
export class WebhookDispatcher {
  readonly #pending = new Map<string, Pending>();
  readonly #inFlight = new Map<string, AbortController>();
  /** Per mailbox: when its next offer may go out (the pause between new sessions). */
  readonly #mailboxNext = new Map<string, number>();
  readonly #now: () => number;
  #seq = 0;
  #unreachable = false;
  /** Consecutive failed probes while unreachable. */
  #failures = 0;
  #probeAt = 0;
  #lastSuccessAt = -Infinity;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  #stopped = false;
  /** Counters for the metrics work. */
  readonly stats = { posted: 0, accepted: 0, retries: 0, refused: 0, failures: 0, outages: 0 };

  constructor(private readonly o: WebhookDispatcherOptions) {
    this.#now = o.clock ?? Date.now;
  }

  /** Offers a session (again). An offer already waiting or in flight is not offered twice. */
  enqueue(offer: WebhookOffer): void {
    if (this.#stopped || this.#pending.has(offer.sessionId) || this.#inFlight.has(offer.sessionId)) return;
    this.#pending.set(offer.sessionId, { offer, seq: this.#seq++, attempts: 0, notBefore: 0 });
    this.#heldBack();
    this.#pump();
  }

  /** Forgets an offer that is no longer wanted (the session ended another way). */
  cancel(sessionId: string): void {
    if (this.#pending.delete(sessionId)) this.#heldBack();
  }

  /** Offers not yet taken by the ACD (waiting or in flight). */
  get backlog(): number {
    return this.#pending.size + this.#inFlight.size;
  }

  get unreachable(): boolean {
    return this.#unreachable;
  }

  /** Aborts the requests in flight (their sessions stay offered; a restart offers them again). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    for (const c of this.#inFlight.values()) c.abort();
  }

  #pump(): void {
    if (this.#stopped) return;
    const limit = this.o.concurrency ?? 8;
    const now = this.#now();
    let wakeAt = Infinity;
    while (this.#inFlight.size < limit) {
      if (this.#unreachable) {
        // One probe at a time, and not before its backoff.
        if (this.#inFlight.size > 0) return this.#wake(wakeAt);
        if (now < this.#probeAt) return this.#wake(this.#probeAt);
      }
      let next: Pending | undefined;
      for (const p of this.#pending.values()) {
        const at = Math.max(this.#unreachable ? 0 : p.notBefore, this.#mailboxNext.get(p.offer.mailbox) ?? 0);
        if (at > now) {
          wakeAt = Math.min(wakeAt, at);
          continue;
        }
        if (!next || p.seq < next.seq) next = p;
      }
      if (!next) return this.#wake(wakeAt);
      this.#pending.delete(next.offer.sessionId);
      const pause = this.o.pauseMs?.(next.offer.mailbox) ?? 0;
      if (pause > 0) this.#mailboxNext.set(next.offer.mailbox, now + pause + PAUSE_MARGIN_MS);
      void this.#send(next);
      if (this.#unreachable) return this.#wake(wakeAt);
    }
    this.#wake(wakeAt);
  }

  #wake(at: number): void {
    if (at === Infinity || this.#stopped) return;
    if (this.#timer && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#pump();
    }, Math.max(0, at - this.#now()));
  }

  async #send(p: Pending): Promise<void> {
    const abort = new AbortController();
    this.#inFlight.set(p.offer.sessionId, abort);
    const started = this.#now();
    p.attempts++;
    if (p.attempts > 1) this.stats.retries++;
    this.stats.posted++;
    let status: number | null = null;
    let problem = "";
    let reason = "unreachable";
    try {
      const body = JSON.stringify(p.offer);
      const ts = Math.floor(this.#now() / 1000);
      const res = await fetch(this.o.url, {
        method: "POST",
        headers: { "content-type": "application/json", [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: sign(this.o.secret, ts, body), "idempotency-key": idempotencyKey(p.offer) },
        body,
        signal: AbortSignal.any([abort.signal, AbortSignal.timeout(this.o.timeoutMs ?? 10_000)]),
      });
      await res.arrayBuffer().catch(() => undefined);
      status = res.status;
      problem = `the ACD answered ${res.status}`;
    } catch (error) {
      const e = error as Error;
      if (e.name === "TimeoutError") reason = "timeout";
      problem = e.name === "TimeoutError" ? `the ACD did not answer within ${Math.round((this.o.timeoutMs ?? 10_000) / 1000)} s` : `the ACD could not be reached: ${causeOf(e)}`;
    }
    this.#inFlight.delete(p.offer.sessionId);
    if (this.#stopped) return;
    const now = this.#now();
    if (status !== null && status >= 200 && status < 300) {
      this.stats.accepted++;
      this.#lastSuccessAt = now;
      this.#reachable();
      this.o.onAccepted(p.offer, p.attempts);
    } else if (!retryable(status)) {
      // It answered, so it is up; it does not want this one.
      this.stats.refused++;
      this.#lastSuccessAt = now;
      this.#reachable();
      this.o.onRefused(p.offer, status!);
    } else {
      this.stats.failures++;
      this.o.onFailure?.(status === null ? reason : `http-${status}`);
      this.#pending.set(p.offer.sessionId, p);
      const initial = this.o.initialDelayMs ?? 1000;
      const max = this.o.maxDelayMs ?? 300_000;
      if (acdDown(status) && this.#lastSuccessAt < started) {
        // Nothing succeeded since this request started: the ACD itself is down.
        if (!this.#unreachable) {
          this.#unreachable = true;
          this.stats.outages++;
          this.o.onState("unreachable", { message: problem, fix: `check that the ACD at ${new URL(this.o.url).host} is running and reachable from asd-bridge; held-back offers go out when it answers` });
        }
        this.#failures++;
        this.#probeAt = now + retryDelayMs(this.#failures, initial, max, this.o.random);
      } else {
        p.notBefore = now + retryDelayMs(p.attempts, initial, max, this.o.random);
      }
    }
    this.#heldBack();
    this.#pump();
  }

  #reachable(): void {
    this.#failures = 0;
    if (!this.#unreachable) return;
    this.#unreachable = false;
    this.o.onState("connected");
  }

  #heldBack(): void {
    this.o.onHeldBack?.(this.#unreachable ? this.backlog : 0);
  }
}

function causeOf(e: Error): string {
  // fetch wraps the socket error ("fetch failed"); its cause has the useful words (ECONNREFUSED).
  const cause = (e as Error & { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? e.message;
}
