import type { Pool } from "pg";
import { migrations as all, type Migration } from "./migrations.js";
import { isDatabaseUnavailable } from "./unavailable.js";

/** Arbitrary constant: the advisory lock that serialises migrations across replicas. */
const MIGRATION_LOCK = 7_464_201_318;

/**
 * Applies the pending migrations. Safe when several replicas start at once: a session-level
 * advisory lock makes the others wait, and they then find nothing left to do.
 */
export async function migrate(pool: Pool, migrations: Migration[] = all): Promise<number[]> {
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    await client.query(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const done = new Set((await client.query<{ version: number }>("SELECT version FROM schema_migrations")).rows.map((r) => r.version));
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
        await client.query("COMMIT");
        applied.push(m.version);
      } catch (error) {
        await client.query("ROLLBACK");
        throw new Error(`migration ${m.version} (${m.name}) failed: ${(error as Error).message}`, { cause: error });
      }
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
  return applied;
}

/**
 * `migrate`, waiting while PostgreSQL is unreachable (stopped, restarting, refusing connections)
 * instead of failing: a service started during a database outage waits for it, as a running one
 * does, rather than exiting into a restart loop. Capped backoff of 0.5 s doubling to 5 s; any
 * other error (a migration that fails) is thrown at once.
 */
export async function migrateWhenReachable(pool: Pool, options: { onWait?: (error: unknown, attempt: number) => void; migrations?: Migration[] } = {}): Promise<number[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await migrate(pool, options.migrations);
    } catch (error) {
      if (!isDatabaseUnavailable(error)) throw error;
      options.onWait?.(error, attempt);
      await new Promise((r) => setTimeout(r, Math.min(5_000, 500 * 2 ** (attempt - 1))));
    }
  }
}
