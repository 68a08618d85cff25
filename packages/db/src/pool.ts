import pg from "pg";

/**
 * A pool whose idle-client errors (PostgreSQL restarting) are reported instead of crashing the
 * process: queries fail while the database is away and succeed again when it returns.
 */
export function createPool(url: string, options: { max?: number; onError?: (error: Error) => void } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 5,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: 30_000,
  });
  pool.on("error", (error) => options.onError?.(error));
  return pool;
}

export type { Pool, PoolClient } from "pg";
