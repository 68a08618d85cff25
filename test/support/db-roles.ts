import { randomBytes } from "node:crypto";
import type { PostroomConfigInput } from "@postroom/config";
import { createPool, DATABASE_SERVICES, groupRole, setupDatabase, type DatabaseLogin, type DatabaseService } from "@postroom/db";

/**
 * Per-service PostgreSQL roles for one e2e world: a role prefix of its own (roles belong to the
 * whole cluster, and test files run at once), a login user per service with a random password,
 * `apply` pointing a configuration at them (`database.users`, each password an `env:` reference,
 * `database.rolePrefix`), `setUp` doing what `postroom up` or the chart's Job does — migrations as
 * the owner, then roles and grants — and `drop` removing the roles once the world's database is gone.
 */
export interface DatabaseRoles {
  prefix: string;
  logins: Record<DatabaseService, { user: string; password: string }>;
  /** Environment that holds the passwords the config references. */
  env: Record<string, string>;
  apply(config: PostroomConfigInput): void;
  /** Migrations and grants with the owner's connection (the world's database URL). */
  setUp(ownerUrl: string, tls?: NonNullable<PostroomConfigInput["database"]>["tls"]): Promise<void>;
  /** A URL of the world's database as one service's login user. */
  urlAs(service: DatabaseService, databaseUrl: string): string;
  /**
   * Drops the roles; call after the database is dropped (its grants go with it). `databaseUrl`:
   * the cluster to drop them on when something else ran the set-up (the image's db-setup).
   */
  drop(databaseUrl?: string, tls?: NonNullable<PostroomConfigInput["database"]>["tls"]): Promise<void>;
}

/** POSTROOM_E2E_SECURE=1 (secure mode, see secure.ts) or POSTROOM_E2E_DB_ROLES=1: every e2e world runs with per-service database roles. */
export function dbRolesByDefault(): boolean {
  return process.env.POSTROOM_E2E_SECURE === "1" || process.env.POSTROOM_E2E_DB_ROLES === "1";
}

function maintenanceOf(databaseUrl: string, tls: NonNullable<PostroomConfigInput["database"]>["tls"]) {
  const u = new URL(databaseUrl);
  u.pathname = "/postgres";
  return { url: u.toString(), tls };
}

const envName = (service: string) => `PG_PASSWORD_${service.toUpperCase().replaceAll("-", "_")}`;

export function databaseRoles(): DatabaseRoles {
  const prefix = `e2e${randomBytes(4).toString("hex")}_`;
  const logins = Object.fromEntries(
    DATABASE_SERVICES.map((s) => [s, { user: `${groupRole(s, prefix)}_login`, password: randomBytes(12).toString("hex") }]),
  ) as DatabaseRoles["logins"];
  const list: DatabaseLogin[] = DATABASE_SERVICES.map((service) => ({ service, ...logins[service] }));
  // Where the roles were made: drop() reaches the same cluster (the world's database may be on a
  // private or TLS-only server), through its maintenance database once the world's is gone.
  let cluster: { url: string; tls: NonNullable<PostroomConfigInput["database"]>["tls"] } | undefined;
  return {
    prefix,
    logins,
    env: Object.fromEntries(DATABASE_SERVICES.map((s) => [envName(s), logins[s].password])),
    apply(config) {
      config.database = {
        ...config.database!,
        rolePrefix: prefix,
        users: Object.fromEntries(DATABASE_SERVICES.map((s) => [s, { user: logins[s].user, password: `env:${envName(s)}` }])),
      };
    },
    async setUp(ownerUrl, tls) {
      cluster = maintenanceOf(ownerUrl, tls);
      const pool = createPool(ownerUrl, { max: 2, tls });
      try {
        await setupDatabase(pool, { prefix, logins: list });
      } finally {
        await pool.end();
      }
    },
    urlAs(service, databaseUrl) {
      const u = new URL(databaseUrl);
      u.username = logins[service].user;
      u.password = logins[service].password;
      return u.toString();
    },
    async drop(databaseUrl, tls) {
      if (databaseUrl) cluster = maintenanceOf(databaseUrl, tls);
      if (!cluster) return;
      const pool = createPool(cluster.url, { max: 1, tls: cluster.tls });
      try {
        for (const s of DATABASE_SERVICES) await pool.query(`DROP ROLE IF EXISTS "${logins[s].user}"`);
        for (const s of DATABASE_SERVICES) await pool.query(`DROP ROLE IF EXISTS "${groupRole(s, prefix)}"`);
      } finally {
        await pool.end();
      }
    },
  };
}
