import type { Mailbox, Tenant } from "@postroom/config";
import type { MailboxState, MailboxStatus, Names } from "@postroom/contracts";
import type { KV } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";

/** The last error a status entry shows: the server's words, our code, and the fix. */
export type StatusError = { message: string; code: string | null; fix: string | null };

/**
 * One mailbox's entry in the `mailbox-status` bucket, as its worker (IMAP, POP3 or Graph) keeps
 * it: the worker changes the counters in `status` as it goes and writes the entry with `set` on
 * every change of state. Once `silenced` (the lease is lost), the entry belongs to the next owner
 * and is never written again.
 */
export class StatusReport {
  status: MailboxStatus;
  silenced = false;

  constructor(
    private readonly o: { tenant: Tenant; mailbox: Mailbox; owner: string; statusKv: KV; names: Names },
    protocol: NonNullable<MailboxStatus["protocol"]>,
    private readonly log: Logger,
  ) {
    const now = new Date().toISOString();
    this.status = {
      version: "v1",
      tenant: o.tenant.id,
      mailbox: o.mailbox.id,
      state: "connecting",
      owner: o.owner,
      lastCheckAt: null,
      lastMessageAt: null,
      backlog: 0,
      lastError: null,
      updatedAt: now,
      protocol,
      checkIntervalSeconds: o.mailbox.inbound.checkIntervalSeconds,
      startedAt: now,
      published: 0,
    };
  }

  /** Records a new state (with the error that caused it) and writes the entry; a failed write is only logged. */
  async set(state: MailboxState, error?: StatusError): Promise<void> {
    if (this.silenced) return;
    const now = new Date().toISOString();
    this.status = { ...this.status, state, updatedAt: now, ...(error ? { lastError: { ...error, at: now } } : {}) };
    try {
      await this.o.statusKv.put(this.o.names.mailboxKey(this.o.tenant.id, this.o.mailbox.id), JSON.stringify(this.status));
    } catch (e) {
      this.log.debug({ problem: (e as Error).message }, "status not written");
    }
  }
}

/**
 * A worker's wait between checks, cut short by `kick` (new mail, an archived message to act on,
 * stop). A kick while no wait is under way is remembered in `kicked`, so a check that started
 * before the news is followed by another at once instead of by the interval.
 */
export class Pause {
  kicked = false;
  #wake: (() => void) | undefined;

  kick(): void {
    this.kicked = true;
    this.#wake?.();
  }

  /** Waits `ms`, or until kicked, or until `closed` settles (the connection went away). */
  sleep(ms: number, closed?: Promise<void>): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
      void closed?.then(done);
    });
  }
}
