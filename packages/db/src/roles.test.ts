import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import pg from "pg";
import { createPool } from "./pool.js";
import { migrate } from "./migrate.js";
import { DATABASE_SERVICES, grantsOf, TABLE_OWNERSHIP, TABLE_PRIVILEGES, type DatabaseService } from "./ownership.js";
import { groupRole, PERMISSION_DENIED, RoleSetupError, setupDatabase, waitForSchema, type DatabaseLogin } from "./roles.js";

// Roles belong to the whole cluster, not to the test's database: a prefix of this run's own keeps
// test files that run at once apart, and after() drops them.
const admin = process.env.DATABASE_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const tag = randomBytes(4).toString("hex");
const dbName = `postroom_roles_${tag}`;
const prefix = `t${tag}_`;
const url = admin.replace(/\/[^/]*$/, `/${dbName}`);
const logins: DatabaseLogin[] = DATABASE_SERVICES.map((service) => ({ service, user: `${groupRole(service, prefix)}_login`, password: randomBytes(9).toString("hex") }));
const loginOf = (service: DatabaseService) => logins.find((l) => l.service === service)!;

/** A pool that logs in as a service's own user (the test server trusts loopback, so the password is not what is tested here). */
function poolAs(service: DatabaseService, database = url): pg.Pool {
  const u = new URL(database);
  u.username = loginOf(service).user;
  u.password = loginOf(service).password!;
  return new pg.Pool({ connectionString: u.toString(), max: 2 });
}

let owner: pg.Pool;

before(async () => {
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${dbName}`);
  await c.end();
  owner = createPool(url);
});

after(async () => {
  await owner?.end();
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  // With the database gone its grants are gone too, so the roles can be dropped.
  for (const l of logins) await c.query(`DROP ROLE IF EXISTS "${l.user}"`);
  for (const s of DATABASE_SERVICES) await c.query(`DROP ROLE IF EXISTS "${groupRole(s, prefix)}"`);
  await c.end();
});

async function expectDenied(pool: pg.Pool, sql: string, params: unknown[] = []): Promise<void> {
  await assert.rejects(pool.query(sql, params), (e: Error & { code?: string }) => {
    assert.equal(e.code, PERMISSION_DENIED, `${sql}: ${e.message}`);
    assert.match(e.message, /permission denied/);
    return true;
  });
}

test("a service connected as its own role waits for the migrations instead of applying them", async () => {
  // Before any set-up the login users do not exist yet: create them with no grants by hand, so
  // waiting is what is tested. setupDatabase below makes them members of their groups.
  const c = await owner.connect();
  try {
    for (const l of logins) await c.query(`CREATE ROLE "${l.user}" LOGIN`);
  } finally {
    c.release();
  }
  const bridge = poolAs("asd-bridge");
  try {
    const missing: number[][] = [];
    await assert.rejects(waitForSchema(bridge, { timeoutMs: 300, pollMs: 50, onWaiting: (m) => missing.push(m) }), RoleSetupError);
    assert.ok(missing[0]!.length > 0, "it said which migrations it waits for");
    const waiting = waitForSchema(bridge, { pollMs: 100 });
    await setupDatabase(owner, { prefix, logins });
    await waiting;
  } finally {
    await bridge.end();
  }
});

test("the migrated schema has exactly the tables of the ownership map", async () => {
  await setupDatabase(owner, { prefix, logins });
  const { rows } = await owner.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = current_schema()");
  const inSchema = rows.map((r) => r.t).sort();
  const inMap = Object.keys(TABLE_OWNERSHIP).sort();
  assert.deepEqual(
    inSchema.filter((t) => !inMap.includes(t)),
    [],
    "a migration created a table that packages/db/src/ownership.ts does not name: give it an owner (and reads, if another service reads it)",
  );
  assert.deepEqual(inMap.filter((t) => !inSchema.includes(t)), [], "the ownership map names a table no migration creates");
});

/** Every (role, table, privilege) PostgreSQL reports, as "role PRIV table" lines. */
async function actualGrants(pool: pg.Pool): Promise<string[]> {
  const lines: string[] = [];
  for (const service of DATABASE_SERVICES) {
    for (const who of [groupRole(service, prefix), loginOf(service).user]) {
      for (const table of Object.keys(TABLE_OWNERSHIP)) {
        for (const p of TABLE_PRIVILEGES) {
          const r = await pool.query<{ ok: boolean }>("SELECT has_table_privilege($1, $2, $3) AS ok", [who, table, p]);
          if (r.rows[0]!.ok) lines.push(`${service} ${p} ${table}`);
        }
      }
    }
  }
  return [...new Set(lines)].sort();
}

function expectedGrants(map = TABLE_OWNERSHIP): string[] {
  return DATABASE_SERVICES.flatMap((s) => [...grantsOf(s, map)].flatMap(([t, ps]) => ps.map((p) => `${s} ${p} ${t}`))).sort();
}

test("each role (group and login user) has exactly the privileges the map grants, and no more", async () => {
  await setupDatabase(owner, { prefix, logins });
  assert.deepEqual(await actualGrants(owner), expectedGrants());
  // No role may create objects in the schema or log in as a group.
  const r = await owner.query<{ rolname: string; rolcanlogin: boolean; rolsuper: boolean; rolcreaterole: boolean; rolcreatedb: boolean }>(
    "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname",
    [`${prefix}%`],
  );
  assert.equal(r.rows.length, 6);
  for (const role of r.rows) {
    assert.equal(role.rolcanlogin, role.rolname.endsWith("_login"), role.rolname);
    assert.ok(!role.rolsuper && !role.rolcreaterole && !role.rolcreatedb, role.rolname);
    const create = await owner.query<{ ok: boolean }>("SELECT has_schema_privilege($1, current_schema(), 'CREATE') AS ok", [role.rolname]);
    assert.equal(create.rows[0]!.ok, false, `${role.rolname} may create tables`);
  }
});

test("connected as asd-bridge or smtp-sender, writing the archiver's messages is refused; each role's own writes work", async () => {
  await setupDatabase(owner, { prefix, logins });
  const archiver = poolAs("archiver");
  const bridge = poolAs("asd-bridge");
  const sender = poolAs("smtp-sender");
  try {
    // The archiver's normal path: a conversation and a message (bigserial ids: sequence USAGE).
    const conv = await archiver.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox) VALUES ('t', 'm') RETURNING id");
    const msg = await archiver.query<{ id: string }>(
      `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, rfc_message_id, received_at, size, sha256, archive_path, conversation_id)
       VALUES ('t/m/x', 't', 'm', 'inbound', 'imap', '<a@b>', now(), 1, 'x', 'p', $1) RETURNING id`,
      [conv.rows[0]!.id],
    );
    const messageId = msg.rows[0]!.id;
    await archiver.query("INSERT INTO addresses (message_id, role, address) VALUES ($1, 'from', 'a@b')", [messageId]);

    // asd-bridge: reads the message, writes only its own tables.
    assert.equal((await bridge.query("SELECT subject FROM messages WHERE id = $1", [messageId])).rowCount, 1);
    await bridge.query("INSERT INTO sessions (id, tenant, mailbox, message_id, queue, acd, state) VALUES (gen_random_uuid(), 't', 'm', $1, 'q', 'builtin', 'created')", [messageId]);
    await expectDenied(bridge, "UPDATE messages SET subject = 'x' WHERE id = $1", [messageId]);
    await expectDenied(bridge, "INSERT INTO conversations (tenant, mailbox) VALUES ('t', 'm')");
    await expectDenied(bridge, "DELETE FROM addresses");
    await expectDenied(bridge, "SELECT * FROM sends");
    // The audit trail: asd-bridge appends its rows and reads them, and nobody changes one.
    await bridge.query("INSERT INTO audit_events (tenant, actor_kind, actor, kind) VALUES ('t', 'agent', 'ann', 'agent.login')");
    assert.equal((await bridge.query("SELECT actor FROM audit_events WHERE tenant = 't'")).rowCount, 1);
    await expectDenied(bridge, "UPDATE audit_events SET actor = 'mallory'");
    await expectDenied(bridge, "DELETE FROM audit_events");
    await expectDenied(sender, "INSERT INTO audit_events (tenant, actor, kind) VALUES ('t', 'x', 'y')");
    await assert.rejects(archiver.query("DELETE FROM audit_events"), /append-only/, "not even its owner");

    // smtp-sender: reads the original, writes sends, touches nothing of asd-bridge's.
    assert.equal((await sender.query("SELECT role FROM addresses WHERE message_id = $1", [messageId])).rowCount, 1);
    await sender.query("INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id) VALUES ('c1', 't', 'm', 'reply', 'pending', '<r@b>')");
    await sender.query("UPDATE sends SET state = 'sent' WHERE command_id = 'c1'");
    await expectDenied(sender, "INSERT INTO messages (message_key) VALUES ('k')");
    await expectDenied(sender, "SELECT * FROM sessions");
    await expectDenied(sender, "UPDATE agent_replies SET state = 'sent'");

    // archiver: nothing of the sessions or sends.
    await expectDenied(archiver, "SELECT * FROM sessions");
    await expectDenied(archiver, "UPDATE sends SET state = 'failed'");
    await expectDenied(archiver, "INSERT INTO schema_migrations (version, name) VALUES (999, 'x')");

    // No service may change the schema.
    for (const p of [archiver, bridge, sender]) {
      await expectDenied(p, "CREATE TABLE sneaky (id int)");
      await assert.rejects(p.query("ALTER TABLE messages ADD COLUMN sneaky int"), /must be owner/);
      await assert.rejects(p.query("DROP TABLE sends"), /must be owner/);
    }
  } finally {
    await Promise.all([archiver.end(), bridge.end(), sender.end()]);
  }
});

test("set-up is idempotent and takes away what the map no longer grants (or what someone granted by hand)", async () => {
  await setupDatabase(owner, { prefix, logins });
  await setupDatabase(owner, { prefix, logins });
  assert.deepEqual(await actualGrants(owner), expectedGrants());

  // A grant made by hand, to the group and to the login user directly: the next set-up revokes it.
  await owner.query(`GRANT INSERT ON sends TO "${groupRole("archiver", prefix)}"`);
  await owner.query(`GRANT SELECT ON sessions TO "${loginOf("smtp-sender").user}"`);
  assert.ok((await actualGrants(owner)).includes("archiver INSERT sends"));
  await setupDatabase(owner, { prefix, logins });
  assert.deepEqual(await actualGrants(owner), expectedGrants());

  // The map drops asd-bridge's read of attachments (issue 12 replaced it): the grant goes.
  const map = { ...TABLE_OWNERSHIP, attachments: { owner: "archiver" as const, reads: TABLE_OWNERSHIP.attachments!.reads.filter((r) => r.service !== "asd-bridge") } };
  await setupDatabase(owner, { prefix, logins, map });
  assert.deepEqual(await actualGrants(owner), expectedGrants(map));
  assert.ok(!(await actualGrants(owner)).includes("asd-bridge SELECT attachments"));
  const bridge = poolAs("asd-bridge");
  try {
    await expectDenied(bridge, "SELECT * FROM attachments");
  } finally {
    await bridge.end();
  }
  await setupDatabase(owner, { prefix, logins });
  assert.deepEqual(await actualGrants(owner), expectedGrants());
});

test("a login user moved to another service loses the first one's group", async () => {
  const moved: DatabaseLogin[] = logins.map((l) => (l.service === "smtp-sender" ? { ...l, service: "asd-bridge" } : l));
  await setupDatabase(owner, { prefix, logins: moved });
  const member = async (role: string) =>
    (await owner.query<{ ok: boolean }>("SELECT pg_has_role($1, $2, 'MEMBER') AS ok", [loginOf("smtp-sender").user, role])).rows[0]!.ok;
  assert.equal(await member(groupRole("asd-bridge", prefix)), true);
  assert.equal(await member(groupRole("smtp-sender", prefix)), false);
  await setupDatabase(owner, { prefix, logins });
  assert.equal(await member(groupRole("smtp-sender", prefix)), true);
  assert.equal(await member(groupRole("asd-bridge", prefix)), false);
});

test("set-up refuses unusable names and a map naming a table the schema lacks, with the fix", async () => {
  await assert.rejects(setupDatabase(owner, { prefix: "Bad-Prefix", logins }), /role prefix "Bad-Prefix" is not usable/);
  await assert.rejects(setupDatabase(owner, { prefix, logins: [{ service: "archiver", user: groupRole("archiver", prefix) }] }), /is a group role's name/);
  await assert.rejects(
    setupDatabase(owner, { prefix, logins, map: { ...TABLE_OWNERSHIP, ghosts: { owner: "archiver", reads: [] } } }),
    /names table\(s\) ghosts that the schema does not have/,
  );
  // Nothing was half applied: the grants are still the map's.
  assert.deepEqual(await actualGrants(owner), expectedGrants());
  assert.deepEqual(await migrate(owner), []);
});
