import { randomBytes } from "node:crypto";
import { createPool, DATABASE_SERVICES, groupRole, setupDatabase, type DatabaseService, type Pool } from "@postroom/db";
import pg from "pg";

/**
 * Set POSTROOM_TEST_DB_ROLES=1 to run the services' package tests with each component logged in
 * as its own database role (the harnesses then hand the component a pool of that role and keep
 * the owner's pool for fixtures and assertions).
 */
export function dbRolesInTests(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.POSTROOM_TEST_DB_ROLES === "1";
}

/** Per-service roles on one test database: pools logged in as each service, and the clean-up. */
export interface TestDatabaseRoles {
  prefix: string;
  /**
   * A pool of the test database logged in as the service's own user (ended by drop()); `url`
   * rewrites its connection URL (an outage test's proxy in front of the server).
   */
  poolAs(service: DatabaseService, options?: { max?: number; url?: (url: string) => string }): Pool;
  /** Ends the pools and drops the roles; call after the database itself is dropped. */
  drop(): Promise<void>;
}

/**
 * Migrates the test database as its owner and sets up the services' roles with a prefix of this
 * call's own (roles are per cluster; test files run at once), exactly as `postroom up` and the
 * chart's Job do. The test server trusts loopback, so the login users' passwords are not checked
 * there; the privileges are.
 */
export async function setUpTestDatabaseRoles(databaseUrl: string): Promise<TestDatabaseRoles> {
  const prefix = `tk${randomBytes(4).toString("hex")}_`;
  const logins = DATABASE_SERVICES.map((service) => ({ service, user: `${groupRole(service, prefix)}_login`, password: randomBytes(12).toString("hex") }));
  const owner = createPool(databaseUrl, { max: 2 });
  try {
    await setupDatabase(owner, { prefix, logins });
  } finally {
    await owner.end();
  }
  const pools: Pool[] = [];
  return {
    prefix,
    poolAs(service, options = {}) {
      const login = logins.find((l) => l.service === service)!;
      const u = new URL(databaseUrl);
      u.username = login.user;
      u.password = login.password;
      const pool = createPool(options.url ? options.url(u.toString()) : u.toString(), { max: options.max ?? 5 });
      pools.push(pool);
      return pool;
    },
    async drop() {
      await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
      // The same cluster, through its maintenance database (the test's own is dropped by now).
      const maintenance = new URL(databaseUrl);
      maintenance.pathname = "/postgres";
      const c = new pg.Client({ connectionString: maintenance.toString() });
      await c.connect();
      try {
        for (const l of logins) await c.query(`DROP ROLE IF EXISTS "${l.user}"`);
        for (const s of DATABASE_SERVICES) await c.query(`DROP ROLE IF EXISTS "${groupRole(s, prefix)}"`);
      } finally {
        await c.end();
      }
    },
  };
}
