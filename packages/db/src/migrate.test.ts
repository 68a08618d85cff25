import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import pg from "pg";
import { createPool } from "./pool.js";
import { migrate, migrateWhenReachable } from "./migrate.js";
import { migrations } from "./migrations.js";

const admin = process.env.DATABASE_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const dbName = `postroom_db_${randomBytes(4).toString("hex")}`;
const url = admin.replace(/\/[^/]*$/, `/${dbName}`);

before(async () => {
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${dbName}`);
  await c.end();
});

after(async () => {
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await c.end();
});

test("replicas starting at once apply each migration exactly once", async () => {
  const pools = [createPool(url), createPool(url), createPool(url)];
  try {
    const results = await Promise.all(pools.map((p) => migrate(p)));
    // Every migration (not only 1): other issues append their own versions to the list.
    const versions = migrations.map((m) => m.version).sort((a, b) => a - b);
    assert.deepEqual(results.flat().sort((a, b) => a - b), versions, "each migration was applied by exactly one replica");
    const rows = await pools[0]!.query("SELECT version FROM schema_migrations");
    assert.equal(rows.rowCount, versions.length);
    assert.deepEqual(await migrate(pools[0]!), [], "a later start finds nothing to do");
  } finally {
    await Promise.all(pools.map((p) => p.end()));
  }
});

test("the same source message cannot be stored twice", async () => {
  const pool = createPool(url);
  try {
    await migrate(pool);
    const conv = await pool.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox) VALUES ('t', 'm') RETURNING id");
    const insert = (key: string) =>
      pool.query(
        `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, folder, uid_validity, uid, rfc_message_id, received_at, size, sha256, archive_path, conversation_id)
         VALUES ($1, 't', 'm', 'inbound', 'imap', 'INBOX', 7, 42, '<a@b>', now(), 1, 'x', 'p', $2)`,
        [key, conv.rows[0]!.id],
      );
    await insert("k1");
    await assert.rejects(insert("k2"), /messages_imap_key/, "same (tenant, mailbox, folder, uidvalidity, uid) under another key is refused");
  } finally {
    await pool.end();
  }
});

test("migrateWhenReachable waits while PostgreSQL refuses connections, then migrates; a failing migration is thrown at once", async () => {
  const pool = createPool(url);
  const realConnect = pool.connect.bind(pool);
  let refusals = 0;
  // The first two connections are refused as by a stopped server (the error node-postgres gives).
  (pool as unknown as { connect: () => Promise<unknown> }).connect = async () => {
    if (refusals < 2) {
      refusals++;
      throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    }
    return realConnect();
  };
  const waits: number[] = [];
  try {
    await migrateWhenReachable(pool, { onWait: (_e, attempt) => waits.push(attempt) });
    assert.deepEqual(waits, [1, 2]);
    await assert.rejects(
      migrateWhenReachable(pool, { migrations: [{ version: 99_999, name: "broken", sql: "SELECT * FROM no_such_table" }], onWait: () => waits.push(-1) }),
      /migration 99999 \(broken\) failed/,
    );
    assert.deepEqual(waits, [1, 2], "no waiting for a migration that fails");
  } finally {
    await pool.end();
  }
});
