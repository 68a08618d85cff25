import type { Pool } from "pg";
import { migrations as all, type Migration } from "./migrations.js";

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
