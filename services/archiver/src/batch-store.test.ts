import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createPool, migrate, type Pool } from "@postroom/db";
import { createTestDatabase, type TestDatabase } from "@postroom/testkit";
import { findStored, insertBatch, type BatchRow } from "./batch-store.js";
import type { MessageRow } from "./store.js";

// A real PostgreSQL database of its own, migrated like production.
let db: TestDatabase;
let pool: Pool;
before(async () => {
  db = await createTestDatabase("archbatch");
  pool = createPool(db.url);
  await migrate(pool);
});
after(async () => {
  await pool?.end();
  await db?.drop();
});

let uid = 0;
function row(over: Partial<MessageRow> & { rfcMessageId: string }): MessageRow {
  uid++;
  return {
    messageKey: `acme/support/imap/INBOX/1/${uid}`,
    tenant: "acme",
    mailbox: "support",
    direction: "inbound",
    protocol: "imap",
    folder: "INBOX",
    uidValidity: 1,
    uid,
    uidl: null,
    inReplyTo: null,
    references: [],
    subject: `message ${uid}`,
    from: { address: "customer@example.com", name: null },
    to: [{ address: "support@acme.test", name: null }],
    cc: [],
    bcc: [],
    dateHeader: null,
    receivedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, uid)),
    size: 10,
    sha256: "0".repeat(64),
    archivePath: `/archive/${uid}`,
    headers: [["subject", `Subject: message ${uid}`]],
    textBody: "hello",
    htmlBody: null,
    classification: "human",
    classificationReason: null,
    dateRaw: null,
    bounce: null,
    oversize: false,
    parseError: null,
    offer: true,
    attachments: [],
    ...over,
  };
}
const plain = (r: MessageRow): BatchRow => ({ row: r });

test("a reply and its original in one batch share a conversation in either order, and a reply stored earlier joins them", async () => {
  const early = row({ rfcMessageId: "<c@x>", inReplyTo: "<a@x>", references: ["<a@x>"] });
  const [stored] = await insertBatch(pool, [plain(early)]);
  // In one batch: the reply before its original, the original, and a reply to the reply.
  const reply = row({ rfcMessageId: "<b@x>", inReplyTo: "<a@x>", references: ["<a@x>"] });
  const original = row({ rfcMessageId: "<a@x>", attachments: [{ partIndex: 1, originalName: "a.pdf", storedName: "a.pdf", contentType: "application/pdf", contentId: null, inline: false, size: 3, sha256: "1".repeat(64) }] });
  const third = row({ rfcMessageId: "<d@x>", inReplyTo: "<b@x>", references: ["<a@x>", "<b@x>"] });
  const unrelated = row({ rfcMessageId: "<z@x>" });
  const out = await insertBatch(pool, [plain(reply), plain(original), plain(third), plain(unrelated)]);
  assert.ok(out.every((o) => o.inserted));
  const conv = out[1]!.conversationId;
  assert.equal(out[0]!.conversationId, conv, "the reply that came first joined its original");
  assert.equal(out[2]!.conversationId, conv);
  assert.notEqual(out[3]!.conversationId, conv);
  const rows = await pool.query<{ rfc_message_id: string; conversation_id: string }>("SELECT rfc_message_id, conversation_id FROM messages");
  const byId = new Map(rows.rows.map((r) => [r.rfc_message_id, r.conversation_id]));
  assert.equal(byId.get("<c@x>"), conv, `the earlier stored reply (was ${stored!.conversationId}) was moved into the original's conversation`);
  assert.equal(byId.get("<b@x>"), conv);
  assert.equal(byId.get("<d@x>"), conv);
  const parts = await pool.query("SELECT 1 FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.rfc_message_id = '<a@x>'");
  assert.equal(parts.rowCount, 1);
  const addresses = await pool.query<{ n: string }>("SELECT count(*) AS n FROM addresses");
  assert.equal(Number(addresses.rows[0]!.n), 10, "from and to of five messages");
  const audit = await pool.query<{ n: string }>("SELECT count(*) AS n FROM audit_events WHERE kind = 'message.archived'");
  assert.equal(Number(audit.rows[0]!.n), 5);
});

test("a batch with keys already stored inserts only the new ones and returns the stored rows for the rest", async () => {
  const a = row({ rfcMessageId: "<r1@x>" });
  const [first] = await insertBatch(pool, [plain(a)]);
  const b = row({ rfcMessageId: "<r2@x>" });
  const out = await insertBatch(pool, [plain(a), plain(b)]);
  assert.equal(out[0]!.inserted, false);
  assert.equal(out[0]!.id, first!.id);
  assert.equal(out[1]!.inserted, true);
  const found = await findStored(pool, [a.messageKey, b.messageKey, "nope"]);
  assert.equal(found.size, 2);
});

test("the loop breaker counts stored messages and those earlier in the same batch, and alerts once per episode", async () => {
  const limit = { maxMessages: 3, windowMs: 10 * 60_000 };
  const from = { address: "robot@loop.example", name: null };
  const storedOne = row({ rfcMessageId: "<l0@x>", from });
  await insertBatch(pool, [{ row: storedOne, loopBreaker: limit }]);
  const batch = [1, 2, 3, 4].map((n) => ({ row: row({ rfcMessageId: `<l${n}@x>`, from }), loopBreaker: limit }));
  const out = await insertBatch(pool, batch);
  assert.deepEqual(out.map((o) => o.offer), [true, true, false, false], "the 4th and 5th of this sender are held back");
  assert.deepEqual(out.map((o) => o.classification), ["human", "human", "loop", "loop"]);
  assert.deepEqual(out.map((o) => o.loopBreaker?.alert), [undefined, undefined, true, false], "one alert for the episode");
  const more = await insertBatch(pool, [{ row: row({ rfcMessageId: "<l5@x>", from }), loopBreaker: limit }]);
  assert.equal(more[0]!.loopBreaker?.alert, false, "still the same episode");
  const lb = await pool.query<{ tripped: string }>("SELECT tripped FROM loop_breaker WHERE sender = $1", [from.address]);
  assert.equal(Number(lb.rows[0]!.tripped), 3);
});
