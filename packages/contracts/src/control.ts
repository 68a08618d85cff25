import { z } from "zod";

/**
 * Ingestion control, kept in the KV bucket `buckets.control` under `ingestKey(tenant, mailbox)`.
 * The archiver writes it when the mailbox's archive cannot take the next message (quota or
 * filesystem full) and clears it when space returns; imap-poller reads it before every check and
 * leaves mail on the server while it says paused.
 */
export const IngestControl = z.object({
  version: z.literal("v1"),
  paused: z.boolean(),
  /** Why, in words an operator understands ("archive quota of 100 GB reached"). */
  reason: z.string().nullable(),
  /** Who wrote it (service and replica). */
  by: z.string(),
  updatedAt: z.iso.datetime({ offset: true }),
});
export type IngestControl = z.infer<typeof IngestControl>;

/** KV key of a mailbox's ingestion control entry. */
export function ingestKey(tenant: string, mailbox: string): string {
  return `ingest.${tenant}.${mailbox}`;
}
