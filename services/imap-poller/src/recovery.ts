import { IngestControl, ingestKey, type MailboxState } from "@postroom/contracts";
import type { KV } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { Backoff } from "./backoff.js";
import { decideFailure } from "./classify.js";

/**
 * How long a mailbox that needs an administrator waits between attempts: slow enough never to
 * hammer a provider (a handful of logins a minute at most), quick enough that a fixed password or
 * a re-granted app is picked up without a restart.
 */
export const NEEDS_ADMIN_RETRY_MS = 20_000;

type StatusError = { message: string; code: string | null; fix: string | null };

export interface RecoveryOptions {
  log: Logger;
  setState(state: MailboxState, error?: StatusError): Promise<void>;
  /** The worker's interruptible sleep (stop() and new mail wake it). */
  sleep(ms: number): Promise<void>;
  needsAdminRetryMs?: number;
}

/**
 * What an IMAP or POP3 worker does after a failed connection or check, acting on the pure
 * `decideFailure`: ask once for a fresh credential, report needs-admin and retry slowly, or back
 * off with capped jittered delays (or the server's own suggestion).
 */
export class Recovery {
  readonly backoff = new Backoff(1000, 60_000);
  /** True from a needs-admin report until the next successful login. */
  needsAdminNow = false;

  constructor(private readonly o: RecoveryOptions) {}

  /** Returns the new value of "a fresh credential was already asked for". */
  async afterFailure(error: unknown, rejectedOnce: boolean): Promise<boolean> {
    const decision = decideFailure(error, { rejectedOnce, needsAdminNow: this.needsAdminNow });
    switch (decision.action) {
      case "refresh-credential":
        this.o.log.warn({ problem: decision.text }, "server refused the credential; asking token-service for a fresh one");
        return true;
      case "needs-admin":
        this.needsAdminNow = true;
        await this.o.setState("needs-admin", { message: decision.message, code: decision.code, fix: decision.fix });
        this.o.log.error({ problem: decision.message, code: decision.code, fix: decision.fix }, "mailbox needs an administrator");
        await this.o.sleep(this.o.needsAdminRetryMs ?? NEEDS_ADMIN_RETRY_MS);
        return decision.rejectedOnce;
      case "back-off": {
        const delay = decision.retryAfterMs ?? this.backoff.next();
        await this.o.setState("backing-off", { message: decision.text, code: decision.code, fix: null });
        this.o.log.warn({ problem: decision.text, retryInMs: delay }, "mailbox check failed; backing off");
        await this.o.sleep(delay);
        return rejectedOnce;
      }
    }
  }
}

/** The archiver's pause, if it has asked for one (archive full): mail then stays on the server. */
export async function ingestPausedReason(controlKv: KV, tenant: string, mailbox: string): Promise<string | undefined> {
  const entry = await controlKv.get(ingestKey(tenant, mailbox));
  if (!entry?.value.length) return undefined;
  const control = IngestControl.safeParse(entry.json());
  return control.success && control.data.paused ? (control.data.reason ?? "paused by the archiver") : undefined;
}
