import type { PostroomConfig } from "@postroom/config";
import { createPool, setupDatabase, type GrantReport } from "@postroom/db";
import { databaseLogins } from "./database-connection.js";

/** What one set-up did, for the log and `postroom up`'s output (no password in it). */
export interface DatabaseSetupResult extends GrantReport {
  migrated: number[];
  /** The login users created or updated, "user (service)". */
  logins: string[];
  prefix: string;
}

/**
 * The database set-up with the owner's (admin's) connection — database.url, or DATABASE_URL as
 * loadConfig applies it: every pending migration, then the services' group roles, their login
 * users and the grants of the ownership map. `postroom up` runs it before the services when they
 * have users of their own; the chart runs it as a Job (the image's `db-setup` command).
 */
export async function runDatabaseSetup(config: PostroomConfig, env: NodeJS.ProcessEnv, url: string = config.database.url): Promise<DatabaseSetupResult> {
  const logins = await databaseLogins(config, env);
  const pool = createPool(url, { tls: config.database.tls, max: 2 });
  try {
    const result = await setupDatabase(pool, { prefix: config.database.rolePrefix, logins });
    return { ...result, logins: logins.map((l) => `${l.user} (${l.service})`), prefix: config.database.rolePrefix };
  } finally {
    await pool.end();
  }
}
