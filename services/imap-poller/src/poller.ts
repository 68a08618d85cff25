import { allMailboxes, type PostroomConfig } from "@postroom/config";
import type { Names } from "@postroom/contracts";
import { CredentialClient, jetStreamOf, openKv, openObjectStore, type NatsConnection } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { MailboxWorker } from "./mailbox-worker.js";

export interface PollerOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  logger: Logger;
  /** Poll only these tenants' mailboxes (per-tenant deployments); all when absent. */
  tenants?: string[];
  owner?: string;
  needsAdminRetryMs?: number;
}

/** Runs one MailboxWorker per configured IMAP mailbox. */
export class Poller {
  readonly workers: MailboxWorker[] = [];

  constructor(private readonly o: PollerOptions) {}

  async start(): Promise<void> {
    const { nc, names, config } = this.o;
    const replicas = config.nats.replicas;
    const cursors = await openKv(nc, names.buckets.cursors, { replicas });
    const statusKv = await openKv(nc, names.buckets.mailboxStatus, { replicas });
    const controlKv = await openKv(nc, names.buckets.control, { replicas });
    // Raw messages wait here until archived; a week's TTL cleans up after any crash.
    const rawStore = await openObjectStore(nc, names.buckets.rawMail, { replicas, ttlMs: 7 * 24 * 3600 * 1000 });
    const credentials = new CredentialClient(nc, names);
    const js = jetStreamOf(nc);
    for (const { tenant, mailbox } of allMailboxes(config)) {
      if (this.o.tenants?.length && !this.o.tenants.includes(tenant.id)) continue;
      if (mailbox.inbound.protocol !== "imap") {
        this.o.logger.warn({ tenant: tenant.id, mailbox: mailbox.id }, "POP3 mailboxes are not read by this version; mailbox skipped");
        continue;
      }
      const worker = new MailboxWorker({
        nc,
        js,
        names,
        tenant,
        mailbox,
        cursors,
        statusKv,
        controlKv,
        rawStore,
        credentials,
        logger: this.o.logger,
        owner: this.o.owner ?? `imap-poller-${process.pid}`,
        ...(this.o.needsAdminRetryMs ? { needsAdminRetryMs: this.o.needsAdminRetryMs } : {}),
      });
      await worker.start();
      this.workers.push(worker);
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}
