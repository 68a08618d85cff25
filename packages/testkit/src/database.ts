import { randomBytes } from "node:crypto";
import pg from "pg";

/** A database made for one test file. */
export interface TestDatabase {
  /** Connection URL of the new database. */
  url: string;
  /** Its name. */
  name: string;
  /** Drops it, disconnecting anyone still connected; safe to call twice. */
  drop(): Promise<void>;
}

/**
 * URL of a database the testkit may connect to in order to CREATE/DROP DATABASE:
 * DATABASE_ADMIN_URL if set, else built from PGHOST/PGPORT/PGUSER/PGPASSWORD with the defaults of
 * the test machine (127.0.0.1:5432, user postgres, trust auth), database "postgres".
 */
export function adminDatabaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.DATABASE_ADMIN_URL;
  if (explicit !== undefined && explicit !== "") return explicit;
  const host = env.PGHOST !== undefined && env.PGHOST !== "" ? env.PGHOST : "127.0.0.1";
  const port = env.PGPORT !== undefined && env.PGPORT !== "" ? env.PGPORT : "5432";
  const user = env.PGUSER !== undefined && env.PGUSER !== "" ? env.PGUSER : "postgres";
  const password = env.PGPASSWORD;
  const auth = encodeURIComponent(user) + (password === undefined || password === "" ? "" : `:${encodeURIComponent(password)}`);
  // A PGHOST starting with "/" is a Unix socket folder; pg reads it from the host query parameter.
  if (host.startsWith("/")) return `postgres://${auth}@localhost:${port}/postgres?host=${encodeURIComponent(host)}`;
  return `postgres://${auth}@${host}:${port}/postgres`;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/**
 * Creates an empty, uniquely named database (`t_<prefix>_<random>`) so that test files running at
 * the same time never share tables. Call `drop()` in `after()`.
 */
export async function createTestDatabase(prefix = "test", options: { adminUrl?: string } = {}): Promise<TestDatabase> {
  const adminUrl = options.adminUrl ?? adminDatabaseUrl();
  const safe = prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_").slice(0, 40);
  const name = `t_${safe}_${randomBytes(5).toString("hex")}`;
  // A server that is not running refuses at once; the long timeout is only for a server that is
  // slow to answer because the machine is loaded (seen at a load of 30 on two cores).
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 30_000 });
  try {
    await admin.connect();
  } catch (error) {
    throw new Error(
      `Cannot reach PostgreSQL at ${adminUrl.replace(/:[^:@/]*@/, ":***@")} to create a test database: ${(error as Error).message}. ` +
        `Run scripts/test-env.sh, or set DATABASE_ADMIN_URL / PGHOST, PGPORT, PGUSER.`,
      { cause: error },
    );
  }
  try {
    // The name is generated above from [a-z0-9_] only, so quoting it is enough.
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  let dropped = false;
  return {
    url: withDatabase(adminUrl, name),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 30_000 });
      await client.connect();
      try {
        // WITH (FORCE) (PostgreSQL 13+) ends pools a test forgot to close, instead of failing.
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
