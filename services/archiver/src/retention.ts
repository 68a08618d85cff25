import { rm } from "node:fs/promises";
import { resolve, sep } from "node:path";
import type { Pool } from "@postroom/db";
import { directoryBytes } from "./disk.js";

export interface PurgeOptions {
  pool: Pool;
  /** The mailbox's archive root: only folders under it are ever removed. */
  root: string;
  tenant: string;
  mailbox: string;
  retentionDays: number;
  now?: Date;
  /** Rows handled per batch (default 200). */
  batch?: number;
}

/** What a purge removed, for the log and the operator. */
export interface PurgeReport {
  tenant: string;
  mailbox: string;
  messages: number;
  bytes: number;
  /** Received before this time were purged. */
  before: string;
}

/**
 * Retention: removes the files of a mailbox's messages received more than `retentionDays` ago and
 * marks their rows `purged_at` — the rows (headers, bodies, addresses, conversation) stay, so the
 * history still shows the exchange. Files go first, then the mark: a crash in between leaves a
 * row whose folder is gone and is purged (again, harmlessly) next time.
 */
export async function purgeExpired(o: PurgeOptions): Promise<PurgeReport> {
  const now = o.now ?? new Date();
  const before = new Date(now.getTime() - o.retentionDays * 24 * 3600_000);
  const root = resolve(o.root) + sep;
  const report: PurgeReport = { tenant: o.tenant, mailbox: o.mailbox, messages: 0, bytes: 0, before: before.toISOString() };
  for (;;) {
    const r = await o.pool.query<{ id: string; archive_path: string; message_key: string }>(
      `SELECT id, archive_path, message_key FROM messages
       WHERE tenant = $1 AND mailbox = $2 AND purged_at IS NULL AND received_at < $3
       ORDER BY received_at LIMIT $4`,
      [o.tenant, o.mailbox, before, o.batch ?? 200],
    );
    if (r.rows.length === 0) return report;
    for (const row of r.rows) {
      const folder = resolve(row.archive_path);
      // A row pointing outside this archive (moved root, edited row) is marked but its path left alone.
      if (folder.startsWith(root)) {
        report.bytes += await directoryBytes(folder);
        await rm(folder, { recursive: true, force: true });
      }
      await o.pool.query("UPDATE messages SET purged_at = now() WHERE id = $1 AND purged_at IS NULL", [row.id]);
      await o.pool.query(
        "INSERT INTO audit_events (tenant, mailbox, actor, kind, ref, detail) VALUES ($1, $2, 'archiver', 'message.purged', $3, $4)",
        [o.tenant, o.mailbox, row.message_key, JSON.stringify({ retentionDays: o.retentionDays })],
      );
      report.messages++;
    }
  }
}
