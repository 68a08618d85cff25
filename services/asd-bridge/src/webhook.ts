import { createHmac, timingSafeEqual } from "node:crypto";

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

export interface WebhookClientOptions {
  url: string;
  secret: string;
  /** Attempts before giving up (the session is then marked failed and logged). */
  attempts?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  timeoutMs?: number;
  clock?: () => number;
}

/** Whether a failed POST is worth another try: network errors, 408, 429 and 5xx are; other 4xx are not. */
export function retryable(status: number | null): boolean {
  return status === null || status === 408 || status === 429 || status >= 500;
}

export class WebhookDeliveryError extends Error {
  override name = "WebhookDeliveryError";
  constructor(
    message: string,
    readonly status: number | null,
    readonly attempts: number,
  ) {
    super(message);
  }
}

/** POSTs signed session offers to the ACD, with capped exponential backoff and jitter. */
export class WebhookClient {
  /** Counters for the metrics work. */
  readonly stats = { posted: 0, retries: 0, failed: 0 };
  constructor(private readonly o: WebhookClientOptions) {}

  async post(offer: WebhookOffer): Promise<void> {
    const body = JSON.stringify(offer);
    const attempts = this.o.attempts ?? 6;
    let last: { status: number | null; message: string } = { status: null, message: "" };
    for (let i = 0; i < attempts; i++) {
      if (i > 0) {
        this.stats.retries++;
        const base = Math.min(this.o.maxDelayMs ?? 30_000, (this.o.initialDelayMs ?? 500) * 2 ** (i - 1));
        await new Promise((r) => setTimeout(r, base / 2 + Math.random() * (base / 2)));
      }
      const ts = Math.floor((this.o.clock ?? Date.now)() / 1000);
      try {
        const res = await fetch(this.o.url, {
          method: "POST",
          headers: { "content-type": "application/json", [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: sign(this.o.secret, ts, body), "idempotency-key": offer.sessionId },
          body,
          signal: AbortSignal.timeout(this.o.timeoutMs ?? 10_000),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          this.stats.posted++;
          return;
        }
        last = { status: res.status, message: `the ACD answered ${res.status}` };
        if (!retryable(res.status)) break;
      } catch (error) {
        last = { status: null, message: `the ACD could not be reached: ${(error as Error).message}` };
      }
    }
    this.stats.failed++;
    throw new WebhookDeliveryError(last.message, last.status, attempts);
  }
}
