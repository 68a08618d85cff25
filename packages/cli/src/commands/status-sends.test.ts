import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createPool, migrate, type Pool } from "@postroom/db";
import { createTestDatabase, type TestDatabase } from "@postroom/testkit";
import { failedSends, failedSendsSection } from "./status-sends.js";

let db: TestDatabase;
let pool: Pool;

before(async () => {
  db = await createTestDatabase("statussends");
  pool = createPool(db.url);
  await migrate(pool);
});

after(async () => {
  await pool?.end();
  await db?.drop();
});

test("failed sends are counted per mailbox over the last 24 hours, with the last failure's words; sent, pending and old ones are not", async () => {
  const insert = (id: string, tenant: string, mailbox: string, state: string, error: string | null, hoursAgo: number) =>
    pool.query(
      `INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id, last_error, updated_at) VALUES ($1, $2, $3, 'reply', $4, '<x>', $5, now() - make_interval(hours => $6))`,
      [id, tenant, mailbox, state, error, hoursAgo],
    );
  await insert("c1", "acme", "support", "failed", "550 5.1.1 <nobody@customer.test>: Recipient address rejected: User unknown", 2);
  await insert("c2", "acme", "support", "failed", "552 5.3.4 Message size exceeds fixed limit", 1);
  await insert("c3", "acme", "support", "sent", null, 1);
  await insert("c4", "acme", "sales", "failed", "old", 30);
  await insert("c5", "acme", "sales", "pending", "451 try later", 1);
  await insert("c6", "globex", "desk", "failed", "550 5.7.1 spam", 3);

  const all = await failedSends(db.url, undefined);
  assert.deepEqual(all.map((r) => [r.tenant, r.mailbox, r.failed, r.lastError]), [
    ["acme", "support", 2, "552 5.3.4 Message size exceeds fixed limit"],
    ["globex", "desk", 1, "550 5.7.1 spam"],
  ]);
  assert.deepEqual((await failedSends(db.url, "globex")).map((r) => r.mailbox), ["desk"]);

  const section = failedSendsSection(all, new Date());
  assert.match(section, /^\nFailed sends \(last 24 h\)\nTENANT\s+MAILBOX\s+FAILED\s+LAST\s+LAST FAILURE\n/);
  assert.match(section, /acme\s+support\s+2\s+\d+m ago\s+552 5\.3\.4 Message size exceeds fixed limit/);
  assert.equal(failedSendsSection([], new Date()), "\nFailed sends (last 24 h)\nnone\n");
});
