import assert from "node:assert/strict";
import { test } from "node:test";
import pg from "pg";
import { adminDatabaseUrl, createTestDatabase } from "./database.js";

test("a test database is created empty, usable, and gone after drop()", async () => {
  const db = await createTestDatabase("testkit");
  assert.match(db.name, /^t_testkit_[0-9a-f]{10}$/);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const { rows } = await client.query<{ db: string }>("select current_database() as db");
  assert.equal(rows[0]?.db, db.name);
  await client.query("create table t (id int)");
  // Left connected on purpose: drop() must end it rather than fail with "database is being accessed".
  client.on("error", () => undefined);
  await db.drop();
  await db.drop();

  const admin = new pg.Client({ connectionString: adminDatabaseUrl() });
  await admin.connect();
  try {
    const left = await admin.query("select 1 from pg_database where datname = $1", [db.name]);
    assert.equal(left.rowCount, 0);
  } finally {
    await admin.end();
  }
  await client.end().catch(() => undefined);
});

test("two databases made with the same prefix do not collide", async () => {
  const [a, b] = await Promise.all([createTestDatabase("same"), createTestDatabase("same")]);
  try {
    assert.notEqual(a.name, b.name);
  } finally {
    await Promise.all([a.drop(), b.drop()]);
  }
});

test("adminDatabaseUrl honours DATABASE_ADMIN_URL, then PG* variables", () => {
  assert.equal(adminDatabaseUrl({ DATABASE_ADMIN_URL: "postgres://x@h:1/y" }), "postgres://x@h:1/y");
  assert.equal(adminDatabaseUrl({}), "postgres://postgres@127.0.0.1:5432/postgres");
  assert.equal(
    adminDatabaseUrl({ PGHOST: "db", PGPORT: "6543", PGUSER: "ci", PGPASSWORD: "p@ss" }),
    "postgres://ci:p%40ss@db:6543/postgres",
  );
});
