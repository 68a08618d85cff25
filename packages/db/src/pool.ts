import { readFileSync } from "node:fs";
import pg from "pg";

/** TLS to PostgreSQL: the CA to trust, an optional client certificate, verification on unless switched off. */
export interface PoolTls {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  verify?: boolean | undefined;
}

/**
 * A pool whose idle-client errors (PostgreSQL restarting) are reported instead of crashing the
 * process: queries fail while the database is away and succeed again when it returns.
 */
export function createPool(url: string, options: { max?: number; onError?: (error: Error) => void; tls?: PoolTls | undefined; queryTimeoutMs?: number } = {}): pg.Pool {
  const tls = options.tls;
  const pool = new pg.Pool({
    connectionString: url,
    // Files read once here: a missing CA is a start-up error naming the file, not a failed query later.
    ...(tls
      ? {
          ssl: {
            rejectUnauthorized: tls.verify !== false,
            ...(tls.ca ? { ca: readFileSync(tls.ca, "utf8") } : {}),
            ...(tls.cert ? { cert: readFileSync(tls.cert, "utf8") } : {}),
            ...(tls.key ? { key: readFileSync(tls.key, "utf8") } : {}),
          },
        }
      : {}),
    max: options.max ?? 5,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: 30_000,
    // The client's own bound, past the server's: a query on a connection whose server went away
    // without a word (no FIN, no RST) would otherwise wait for ever and hold what called it — a
    // consumer's message, a pacer's turn. It fails instead, and the caller's retry (or
    // untilDatabaseAnswers) takes over.
    query_timeout: options.queryTimeoutMs ?? 45_000,
  });
  pool.on("error", (error) => options.onError?.(error));
  return pool;
}

export type { Pool, PoolClient } from "pg";
