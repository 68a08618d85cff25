import type { Pool, PoolClient } from "pg";
import { migrate } from "./migrate.js";
import { migrations as all, type Migration } from "./migrations.js";
import { DATABASE_SERVICES, grantsOf, TABLE_OWNERSHIP, type DatabaseService, type TableOwnership } from "./ownership.js";

/** Arbitrary constant, apart from the migrations' lock: serialises role set-ups started together. */
const ROLES_LOCK = 7_464_201_319;

/** The default prefix of the group roles: postroom_archiver, postroom_asd_bridge, postroom_smtp_sender. */
export const DEFAULT_ROLE_PREFIX = "postroom_";

/** The error a query gets for a privilege its role lacks (SQLSTATE insufficient_privilege). */
export const PERMISSION_DENIED = "42501";

const PREFIX = /^[a-z_][a-z0-9_]{0,39}$/;
// Login names are free text to PostgreSQL; kept to what URLs and Kubernetes keys carry unescaped.
const LOGIN = /^[a-z_][a-z0-9_.-]{0,62}$/;

/** A login user of one service: it connects as this user and inherits the service's group role. */
export interface DatabaseLogin {
  service: DatabaseService;
  user: string;
  /** Set (or changed) on every set-up; omitted: the user's password is left as it is (certificate or external auth). */
  password?: string | undefined;
}

export interface RoleOptions {
  /** Prefix of the group roles (default {@link DEFAULT_ROLE_PREFIX}); tests use one of their own, roles being per cluster. */
  prefix?: string | undefined;
  /** The login users to create or update, one or more per service. */
  logins?: DatabaseLogin[] | undefined;
  /** The ownership map to grant from (default the real one; tests hand in a changed one). */
  map?: Readonly<Record<string, TableOwnership>> | undefined;
}

/** What a set-up found: tables of the schema the map does not name get no grant at all. */
export interface GrantReport {
  /** Tables present in the schema but missing from the ownership map (no service may touch them). */
  unmapped: string[];
}

export class RoleSetupError extends Error {
  override name = "RoleSetupError";
}

/** The NOLOGIN group role that holds a service's grants. */
export function groupRole(service: DatabaseService, prefix: string = DEFAULT_ROLE_PREFIX): string {
  if (!PREFIX.test(prefix)) throw new RoleSetupError(`role prefix "${prefix}" is not usable: lowercase letters, digits and _ only, starting with a letter or _`);
  return `${prefix}${service.replaceAll("-", "_")}`;
}

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;

async function roleExists(client: PoolClient, name: string): Promise<boolean> {
  return (await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [name])).rowCount === 1;
}

/**
 * Creates the group roles (NOLOGIN, no rights of their own beyond the grants) and the login users,
 * each a member of its service's group only. Idempotent: an existing role is kept, a login's
 * password set again, a membership in another service's group revoked.
 */
export async function ensureRoles(client: PoolClient, options: RoleOptions = {}): Promise<void> {
  const prefix = options.prefix ?? DEFAULT_ROLE_PREFIX;
  const groups = new Map(DATABASE_SERVICES.map((s) => [s, groupRole(s, prefix)] as const));
  for (const group of groups.values()) {
    if (!(await roleExists(client, group))) await client.query(`CREATE ROLE ${ident(group)} NOLOGIN`);
    else await client.query(`ALTER ROLE ${ident(group)} NOLOGIN`);
  }
  for (const login of options.logins ?? []) {
    const group = groups.get(login.service)!;
    if (!LOGIN.test(login.user)) throw new RoleSetupError(`database user "${login.user}" for ${login.service} is not usable: lowercase letters, digits, _ . - only`);
    if ([...groups.values()].includes(login.user)) {
      throw new RoleSetupError(`database user "${login.user}" for ${login.service} is a group role's name: give the login user its own name (e.g. ${group}_login)`);
    }
    // The password goes into the statement (ALTER ROLE takes no parameters); escapeLiteral quotes
    // it, and the statement text never reaches a log or an error message.
    const password = login.password !== undefined ? ` PASSWORD ${client.escapeLiteral(login.password)}` : "";
    if (!(await roleExists(client, login.user))) await client.query(`CREATE ROLE ${ident(login.user)} LOGIN INHERIT${password}`);
    else await client.query(`ALTER ROLE ${ident(login.user)} LOGIN INHERIT${password}`);
    const memberOf = await client.query<{ rolname: string }>(
      `SELECT g.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles u ON u.oid = a.member WHERE u.rolname = $1`,
      [login.user],
    );
    const current = new Set(memberOf.rows.map((r) => r.rolname));
    for (const other of groups.values()) {
      if (other !== group && current.has(other)) await client.query(`REVOKE ${ident(other)} FROM ${ident(login.user)}`);
    }
    if (!current.has(group)) await client.query(`GRANT ${ident(group)} TO ${ident(login.user)}`);
  }
}

/**
 * Grants every group role exactly what the ownership map says, in one transaction: first every
 * table and sequence right in the schema is revoked from it (so a right the map no longer gives
 * goes), then the owner's SELECT/INSERT/UPDATE/DELETE and sequence USAGE, and the documented reads.
 * Other sessions see the old grants or the new ones, never none in between.
 */
export async function applyGrants(client: PoolClient, options: RoleOptions = {}): Promise<GrantReport> {
  const prefix = options.prefix ?? DEFAULT_ROLE_PREFIX;
  const map = options.map ?? TABLE_OWNERSHIP;
  const schema = (await client.query<{ s: string }>("SELECT current_schema() AS s")).rows[0]!.s;
  const tables = new Set(
    (await client.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = $1", [schema])).rows.map((r) => r.t),
  );
  const missing = Object.keys(map).filter((t) => !tables.has(t));
  if (missing.length > 0) {
    throw new RoleSetupError(`the ownership map names table(s) ${missing.join(", ")} that the schema does not have: apply the migrations first`);
  }
  // Sequences behind serial / identity columns, by table: an owner inserting rows needs nextval.
  const sequences = await client.query<{ t: string; s: string }>(
    `SELECT t.relname AS t, s.relname AS s FROM pg_class s
       JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
       JOIN pg_class t ON t.oid = d.refobjid
       JOIN pg_namespace n ON n.oid = s.relnamespace
      WHERE s.relkind = 'S' AND n.nspname = $1`,
    [schema],
  );
  const s = ident(schema);
  // Login users hold no grant of their own: everything comes through their group.
  const groups = DATABASE_SERVICES.map((service) => ident(groupRole(service, prefix)));
  for (const role of [...groups, ...(options.logins ?? []).map((l) => ident(l.user))]) {
    await client.query(`REVOKE ALL ON ALL TABLES IN SCHEMA ${s} FROM ${role}`);
    await client.query(`REVOKE ALL ON ALL SEQUENCES IN SCHEMA ${s} FROM ${role}`);
  }
  for (const service of DATABASE_SERVICES) {
    const group = ident(groupRole(service, prefix));
    await client.query(`GRANT USAGE ON SCHEMA ${s} TO ${group}`);
    for (const [table, privileges] of grantsOf(service, map)) {
      await client.query(`GRANT ${privileges.join(", ")} ON TABLE ${s}.${ident(table)} TO ${group}`);
      if (privileges.includes("INSERT")) {
        for (const seq of sequences.rows.filter((r) => r.t === table)) await client.query(`GRANT USAGE ON SEQUENCE ${s}.${ident(seq.s)} TO ${group}`);
      }
    }
  }
  return { unmapped: [...tables].filter((t) => !(t in map)).sort() };
}

/**
 * What `postroom up`, the chart's set-up Job and the tests run with the owner's (admin's)
 * connection: the migrations, then the roles and their grants. Safe to run again at any time and
 * from several places at once (advisory locks).
 */
export async function setupDatabase(adminPool: Pool, options: RoleOptions & { migrations?: Migration[] } = {}): Promise<{ migrated: number[] } & GrantReport> {
  const migrated = await migrate(adminPool, options.migrations ?? all);
  const client = await adminPool.connect();
  try {
    await client.query("BEGIN");
    try {
      await client.query("SELECT pg_advisory_xact_lock($1)", [ROLES_LOCK]);
      await ensureRoles(client, options);
      const report = await applyGrants(client, options);
      await client.query("COMMIT");
      return { migrated, ...report };
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      if (error instanceof RoleSetupError) throw error;
      const e = error as Error & { code?: string };
      // 42501 here: the admin connection may not create roles or grant on these tables.
      const fix = e.code === PERMISSION_DENIED ? " (the set-up connection needs CREATEROLE and to own the tables: use the user that ran the migrations)" : "";
      throw new RoleSetupError(`database role set-up failed: ${e.message}${fix}`, { cause: error });
    }
  } finally {
    client.release();
  }
}

/**
 * For a service connected as its own role, which may not migrate: waits until every migration
 * it was built with is applied (by the set-up step, run with the owner's connection). `onWaiting`
 * is told what is missing and why, at the first check and then every `reportEveryMs`. No
 * schema_migrations yet, or no SELECT on it yet (the set-up has migrated but not granted) is
 * waited out like a missing migration: the set-up may be running right now.
 */
export async function waitForSchema(
  pool: Pool,
  options: { migrations?: Migration[]; pollMs?: number; timeoutMs?: number; reportEveryMs?: number; onWaiting?: (missing: number[], reason: string) => void } = {},
): Promise<void> {
  const wanted = (options.migrations ?? all).map((m) => m.version);
  const started = Date.now();
  let reported = 0;
  for (;;) {
    let missing = wanted;
    let reason: string;
    try {
      const done = new Set((await pool.query<{ version: number }>("SELECT version FROM schema_migrations")).rows.map((r) => r.version));
      missing = wanted.filter((v) => !done.has(v));
      reason = `migration(s) ${missing.join(", ")} not applied yet`;
    } catch (error) {
      const code = (error as { code?: string }).code;
      reason =
        code === PERMISSION_DENIED
          ? "this database user may not read schema_migrations yet: its role has no grants"
          : code === "42P01"
            ? "no migration applied yet"
            : `the database did not answer: ${(error as Error).message}`;
    }
    if (missing.length === 0) return;
    if (options.timeoutMs !== undefined && Date.now() - started > options.timeoutMs) {
      throw new RoleSetupError(`gave up waiting for the schema after ${options.timeoutMs} ms (${reason}): run the database set-up with the owner's connection (postroom up, or the chart's db-setup Job)`);
    }
    if (Date.now() - reported >= (options.reportEveryMs ?? 30_000)) {
      options.onWaiting?.(missing, reason);
      reported = Date.now();
    }
    await new Promise((r) => setTimeout(r, options.pollMs ?? 1000));
  }
}
