import { z } from "zod";
import type { MailboxStatus } from "./messages.js";

/**
 * Shapes and keys that imap-poller replicas share through NATS KV: mailbox leases, replica
 * heartbeats (both in `buckets.leases`) and the seen-index used to re-map a folder after its
 * UIDVALIDITY changed (`buckets.ingested`).
 */

const isoTime = z.iso.datetime({ offset: true });

/** A replica's claim on one mailbox; the entry expires with the bucket's TTL unless renewed. */
export const MailboxLease = z.object({
  version: z.literal("v1"),
  /** The owning replica (its `ReplicaHeartbeat.replica`). */
  owner: z.string(),
  tenant: z.string(),
  mailbox: z.string(),
  /** When the owner first took the lease (renewals keep it). */
  since: isoTime,
  renewedAt: isoTime,
});
export type MailboxLease = z.infer<typeof MailboxLease>;

/** Written by every running replica, so the others can share the mailboxes evenly. */
export const ReplicaHeartbeat = z.object({
  version: z.literal("v1"),
  replica: z.string(),
  /** Tenants this replica may poll; null means every tenant. */
  tenants: z.array(z.string()).nullable(),
  owned: z.number().int().nonnegative(),
  at: isoTime,
});
export type ReplicaHeartbeat = z.infer<typeof ReplicaHeartbeat>;

/** Lease key of a mailbox in `buckets.leases`. */
export function leaseKey(tenant: string, mailbox: string): string {
  return `lease.${tenant}.${mailbox}`;
}

/** Heartbeat key of a replica in `buckets.leases` (the replica id must be a KV-safe token). */
export function replicaKey(replica: string): string {
  return `replica.${replica}`;
}

/** Filter matching every replica heartbeat in `buckets.leases`. */
export const replicaKeys = "replica.>";

/**
 * A mailbox is stalled when it should be checking but has not completed a check within three
 * check intervals. Paused, needs-admin and stopped mailboxes are not stalled: they say why they
 * are not checking. Pure, so `postroom status`, dashboards and alerts agree.
 */
export function isStalled(status: MailboxStatus, checkIntervalSeconds: number, now: Date = new Date()): boolean {
  if (status.state === "paused" || status.state === "needs-admin" || status.state === "stopped") return false;
  const since = Date.parse(status.lastCheckAt ?? status.startedAt ?? status.updatedAt);
  return now.getTime() - since > 3 * checkIntervalSeconds * 1000;
}
