import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import pg from "pg";
import { queryAudit, recordAudit } from "./audit.js";
import { migrate } from "./migrate.js";
import { createPool, type Pool } from "./pool.js";

const admin = process.env.DATABASE_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const dbName = `postroom_audit_${randomBytes(4).toString("hex")}`;
const url = admin.replace(/\/[^/]*$/, `/${dbName}`);
let pool: Pool;

before(async () => {
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${dbName}`);
  await c.end();
  pool = createPool(url);
  await migrate(pool);
});

after(async () => {
  await pool?.end();
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await c.end();
});

test("audit rows can be appended but never changed, deleted or truncated", async () => {
  await recordAudit(pool, { tenant: "acme", actorKind: "agent", actor: "ann", kind: "agent.login", clientAddress: "127.0.0.1" });
  await assert.rejects(pool.query("UPDATE audit_events SET actor = 'mallory'"), /append-only: UPDATE refused/);
  await assert.rejects(pool.query("DELETE FROM audit_events"), /append-only: DELETE refused/);
  await assert.rejects(pool.query("TRUNCATE audit_events"), /append-only: TRUNCATE refused/);
  const rows = await queryAudit(pool, { tenant: "acme" });
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.actor, "ann", "the row is as written");
});

test("a query reads one tenant only, newest first, filtered by time, actor and kind", async () => {
  const sessionId = "00000000-0000-4000-8000-000000000001";
  await recordAudit(pool, { tenant: "globex", actorKind: "agent", actor: "ann", kind: "session.open", sessionId, detail: { secret: "globex" } });
  await recordAudit(pool, { tenant: "acme", actorKind: "agent", actor: "bob", kind: "session.close", sessionId, detail: { outcome: "answered" } });
  await recordAudit(pool, { tenant: "acme", actorKind: "service", actor: "archiver", kind: "config.reload" });
  const acme = await queryAudit(pool, { tenant: "acme" });
  assert.ok(acme.every((r) => r.tenant === "acme"), "no other tenant's row");
  assert.deepEqual(acme.map((r) => r.kind), ["session.close", "agent.login"], "people's actions, newest first; services' own events left out");
  assert.deepEqual((await queryAudit(pool, { tenant: "acme", includeService: true })).map((r) => r.kind), ["config.reload", "session.close", "agent.login"]);
  assert.deepEqual((await queryAudit(pool, { tenant: "acme", actor: "ann" })).map((r) => r.kind), ["agent.login"]);
  assert.deepEqual((await queryAudit(pool, { tenant: "acme", kindPrefix: "session." })).map((r) => r.detail), [{ outcome: "answered" }]);
  assert.deepEqual(await queryAudit(pool, { tenant: "acme", since: new Date(Date.now() + 60_000) }), []);
  assert.deepEqual((await queryAudit(pool, { tenant: "globex" })).map((r) => r.sessionId), [sessionId]);
});
