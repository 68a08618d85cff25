import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { allMailboxes, type Mailbox, type PostroomConfig, type Tenant } from "@postroom/config";
import { RAW_MAIL_TTL_MS, type Names } from "@postroom/contracts";
import { CredentialClient, jetStreamOf, openKv, openObjectStore, type NatsConnection } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { DEFAULT_LEASE_TIMING, LeaseManager, type LeaseTarget, type LeaseTiming } from "./lease.js";
import { MailboxWorker, type MailboxWorkerOptions, type Worker } from "./mailbox-worker.js";
import { Pop3Worker } from "./pop3-worker.js";
import { GraphWorker } from "./graph-worker.js";

export interface PollerOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  logger: Logger;
  /** Poll only these tenants' mailboxes (per-tenant deployments, POSTROOM_TENANTS); all when absent. */
  tenants?: string[];
  /** This replica's id (default: host, pid and a random suffix); must be a KV-safe token. */
  owner?: string;
  needsAdminRetryMs?: number;
  /** Lease timing (tests only shorten nothing: the default bound is what is stated). */
  leaseTiming?: LeaseTiming;
}

/** A replica id usable as a KV key token: unique per process, readable in logs. */
export function replicaId(): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 40) || "host";
  return `${host}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

/**
 * One replica of imap-poller. It takes leases on its share of the configured mailboxes (all, or
 * only its tenants') and runs one worker per leased mailbox — IMAP, POP3 or Graph — so each mailbox is
 * polled by exactly one replica, fails and recovers on its own, and moves to another replica
 * within 15 s when this one dies.
 */
export class Poller {
  readonly workers = new Map<string, Worker>();
  #leases: LeaseManager | undefined;
  readonly owner: string;

  constructor(private readonly o: PollerOptions) {
    this.owner = o.owner ?? replicaId();
  }

  async start(): Promise<void> {
    const { nc, names, config } = this.o;
    const replicas = config.nats.replicas;
    const timing = this.o.leaseTiming ?? DEFAULT_LEASE_TIMING;
    const cursors = await openKv(nc, names.buckets.cursors, { replicas });
    const statusKv = await openKv(nc, names.buckets.mailboxStatus, { replicas });
    const controlKv = await openKv(nc, names.buckets.control, { replicas });
    const ingested = await openKv(nc, names.buckets.ingested, { replicas });
    const leasesKv = await openKv(nc, names.buckets.leases, { replicas, ttlMs: timing.ttlMs });
    // Raw messages wait here until archived; a week's TTL cleans up after any crash.
    const rawStore = await openObjectStore(nc, names.buckets.rawMail, { replicas, ttlMs: RAW_MAIL_TTL_MS });
    const credentials = new CredentialClient(nc, names);
    const js = jetStreamOf(nc);
    const byKey = new Map<string, { tenant: Tenant; mailbox: Mailbox }>();
    for (const { tenant, mailbox } of allMailboxes(config)) {
      if (this.o.tenants?.length && !this.o.tenants.includes(tenant.id)) continue;
      byKey.set(names.mailboxKey(tenant.id, mailbox.id), { tenant, mailbox });
    }
    const log = this.o.logger.child({ replica: this.owner });
    log.info({ mailboxes: byKey.size, tenants: this.o.tenants ?? "all" }, "imap-poller replica starting");
    const workerFor = (t: LeaseTarget): Worker => {
      const { tenant, mailbox } = byKey.get(names.mailboxKey(t.tenant, t.mailbox))!;
      const options: MailboxWorkerOptions = {
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
        ingested,
        logger: this.o.logger,
        owner: this.owner,
        ...(this.o.needsAdminRetryMs ? { needsAdminRetryMs: this.o.needsAdminRetryMs } : {}),
      };
      switch (mailbox.inbound.protocol) {
        case "pop3":
          return new Pop3Worker(options);
        case "graph":
          return new GraphWorker(options);
        default:
          return new MailboxWorker(options);
      }
    };
    this.#leases = new LeaseManager({
      kv: leasesKv,
      replica: this.owner,
      tenants: this.o.tenants?.length ? this.o.tenants : null,
      targets: [...byKey.values()].map(({ tenant, mailbox }) => ({ tenant: tenant.id, mailbox: mailbox.id })),
      timing,
      logger: this.o.logger,
      onAcquired: async (t) => {
        const worker = workerFor(t);
        this.workers.set(names.mailboxKey(t.tenant, t.mailbox), worker);
        await worker.start();
      },
      onLost: async (t) => {
        const key = names.mailboxKey(t.tenant, t.mailbox);
        const worker = this.workers.get(key);
        this.workers.delete(key);
        await worker?.abort();
      },
      onReleasing: async (t) => {
        const key = names.mailboxKey(t.tenant, t.mailbox);
        const worker = this.workers.get(key);
        this.workers.delete(key);
        await worker?.stop();
      },
    });
    await this.#leases.start();
  }

  /** Stops every worker in order and releases their leases, so other replicas take over at once. */
  async stop(): Promise<void> {
    await this.#leases?.stop();
  }
}
