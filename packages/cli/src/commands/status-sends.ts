import { readFileSync } from "node:fs";
import type { PoolTls } from "@postroom/db";
import pg from "pg";
import { ago, formatTable } from "./status-table.js";

/** Failed sends of one mailbox in the window: how many, and the last one's time and words. */
export interface FailedSends {
  tenant: string;
  mailbox: string;
  failed: number;
  lastAt: Date;
  lastError: string | null;
}

/** How far back `postroom status` counts failed sends. */
export const FAILED_SENDS_WINDOW_HOURS = 24;

/**
 * Failed sends per mailbox over the last `hours`, from smtp-sender's `sends` rows (agents' replies,
 * forwards and alerts that will not go out: 5xx refusals, refused commands, given up after 24 h of
 * retries). Reads PostgreSQL, where the sender keeps them; the mailbox-status bucket only holds
 * the latest state. Throws when the database cannot be reached (the caller says so and goes on).
 * `tls`: the config's database.tls, verified as the services verify it.
 */
export async function failedSends(url: string, tenant: string | undefined, hours = FAILED_SENDS_WINDOW_HOURS, tls?: PoolTls): Promise<FailedSends[]> {
  const ssl = tls
    ? {
        rejectUnauthorized: tls.verify !== false,
        ...(tls.ca ? { ca: readFileSync(tls.ca, "utf8") } : {}),
        ...(tls.cert ? { cert: readFileSync(tls.cert, "utf8") } : {}),
        ...(tls.key ? { key: readFileSync(tls.key, "utf8") } : {}),
      }
    : undefined;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000, statement_timeout: 5000, ...(ssl ? { ssl } : {}) });
  await client.connect();
  try {
    const r = await client.query<{ tenant: string; mailbox: string; failed: string; last_at: Date; last_error: string | null }>(
      `SELECT tenant, mailbox, count(*) AS failed, max(updated_at) AS last_at,
              (array_agg(last_error ORDER BY updated_at DESC))[1] AS last_error
       FROM sends WHERE state = 'failed' AND updated_at > now() - make_interval(hours => $1) AND ($2::text IS NULL OR tenant = $2)
       GROUP BY tenant, mailbox ORDER BY tenant, mailbox`,
      [hours, tenant ?? null],
    );
    return r.rows.map((row) => ({ tenant: row.tenant, mailbox: row.mailbox, failed: Number(row.failed), lastAt: row.last_at, lastError: row.last_error }));
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The "failed sends" section of `postroom status`, its own table below the mailboxes. Pure. */
export function failedSendsSection(rows: FailedSends[], now: Date, hours = FAILED_SENDS_WINDOW_HOURS): string {
  const title = `\nFailed sends (last ${hours} h)\n`;
  if (rows.length === 0) return `${title}none\n`;
  return title + formatTable(["TENANT", "MAILBOX", "FAILED", "LAST", "LAST FAILURE"], rows.map((r) => [r.tenant, r.mailbox, String(r.failed), ago(r.lastAt.toISOString(), now), r.lastError ?? ""]));
}
