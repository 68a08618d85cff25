import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTestDatabase, freePort, type TestDatabase } from "@postroom/testkit";
import pg from "pg";
import { isDatabaseUnavailable } from "./database.js";

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase("archdb");
});
after(async () => {
  await db?.drop();
});

test("a refused connection means the database is unavailable", async () => {
  const port = await freePort();
  const pool = new pg.Pool({ connectionString: `postgres://postgres@127.0.0.1:${port}/x`, connectionTimeoutMillis: 2000 });
  const error = await pool.query("SELECT 1").catch((e: unknown) => e);
  await pool.end();
  assert.ok(isDatabaseUnavailable(error), String(error));
});

test("a server-side disconnect (an administrator or a shutdown ending the session) means unavailable", async () => {
  const client = new pg.Client({ connectionString: db.url });
  client.on("error", () => undefined);
  await client.connect();
  const pid = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  await admin.query("SELECT pg_terminate_backend($1)", [pid]);
  await admin.end();
  const error = await client.query("SELECT 1").catch((e: unknown) => e);
  await client.end().catch(() => undefined);
  assert.ok(isDatabaseUnavailable(error), String(error));
});

test("a wrong statement or a constraint violation is not an outage", async () => {
  const pool = new pg.Pool({ connectionString: db.url });
  try {
    const syntax = await pool.query("SELEKT 1").catch((e: unknown) => e);
    assert.equal(isDatabaseUnavailable(syntax), false);
    await pool.query("CREATE TABLE u (k int PRIMARY KEY)");
    await pool.query("INSERT INTO u VALUES (1)");
    const dup = await pool.query("INSERT INTO u VALUES (1)").catch((e: unknown) => e);
    assert.equal(isDatabaseUnavailable(dup), false);
    const nul = await pool.query("SELECT $1::text", ["a\u0000b"]).catch((e: unknown) => e);
    assert.equal(isDatabaseUnavailable(nul), false);
  } finally {
    await pool.end();
  }
});
