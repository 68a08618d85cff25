import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { simpleParser } from "mailparser";
import { PERMISSION_DENIED, type DatabaseService } from "@postroom/db";
import { waitFor } from "@postroom/testkit";
import pg from "pg";
import { customerEmail } from "../support/mail.js";
import { E2eWorld, SUPPORT } from "../support/fixture.js";

// The walking skeleton's flow with every service logged in to PostgreSQL as its own role, each
// granted only its own tables and the documented reads of packages/db's ownership map.
let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("dbroles", undefined, { dbRoles: true });
  await w.system.start();
  // Generous: five services start on a shared, loaded 2-core machine.
  await w.mailboxReady(90_000);
});

after(async () => {
  await w?.close();
});

test("an email is archived, offered and marked seen, and the agent's reply goes out threaded, with each service under its own role", async () => {
  const raw = customerEmail({ to: SUPPORT, subject: "Roles please", messageId: "<roles-1@customer.example>" });
  const { uid, uidValidity } = await w.dovecot.appendMessage(SUPPORT, raw);
  const key = `acme/support/imap/INBOX/${uidValidity}/${uid}`;

  const [row] = await waitFor(
    async () => {
      const rows = await w.rows<{ id: string }>("SELECT id FROM messages WHERE message_key = $1", [key]);
      return rows.length ? rows : undefined;
    },
    { timeoutMs: 60_000, what: () => `message row\n${w.system.dump()}` },
  );
  assert.deepEqual(await w.emlOf(key), raw, "archived byte for byte");
  await waitFor(
    async () => (await w.rows("SELECT 1 FROM sessions s JOIN session_events e ON e.session_id = s.id AND e.state = 'offered' WHERE s.message_id = $1", [row!.id])).length > 0,
    { timeoutMs: 40_000, what: () => `session offered\n${w.system.dump()}` },
  );
  await waitFor(async () => (await w.dovecot.flagsOf(SUPPORT)).get(uid)?.includes("\\Seen") ?? false, { timeoutMs: 40_000, what: () => `\\Seen\n${w.system.dump()}` });

  const before = w.smtp.messages.length;
  await w.requestSend({ commandId: "roles-reply-1", tenant: "acme", mailbox: "support", kind: "reply", original: key, to: ["ann@customer.example"], text: "Done." });
  const [sent] = (await w.smtp.waitForMessages(before + 1, 60_000)).slice(before);
  const parsed = await simpleParser(sent!.raw);
  assert.equal(parsed.subject, "Re: Roles please", "smtp-sender read the original through its read-only grant");
  assert.equal(parsed.inReplyTo, "<roles-1@customer.example>");
  const thread = await waitFor(
    async () => {
      const rows = await w.rows<{ conversation_id: string }>("SELECT conversation_id FROM messages WHERE message_key = ANY($1)", [[key, "acme/support/sent/roles-reply-1"]]);
      return rows.length === 2 ? rows : undefined;
    },
    { timeoutMs: 40_000, what: () => `sent reply archived\n${w.system.dump()}` },
  );
  assert.equal(thread[0]!.conversation_id, thread[1]!.conversation_id);
  assert.equal((await w.rows<{ state: string }>("SELECT state FROM sends WHERE command_id = 'roles-reply-1'"))[0]?.state, "sent");

  // They really are logged in as themselves: every connection to this database is the test's
  // own (as the owner) or one of the three login users.
  const users = new Set((await w.rows<{ usename: string }>("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()")).map((r) => r.usename));
  const logins = w.dbRoles!.logins;
  for (const s of ["archiver", "asd-bridge", "smtp-sender"] as const) assert.ok(users.has(logins[s].user), `${s} is connected as ${logins[s].user}: ${[...users].join(", ")}`);
  const owner = new URL(w.db.url).username;
  assert.deepEqual([...users].filter((u) => u !== owner && !Object.values(logins).some((l) => l.user === u)), [], "no service connected as anyone else");
});

test("connected as one service's user, another service's tables cannot be written (and most not even read)", async () => {
  const as = (service: DatabaseService) => new pg.Pool({ connectionString: w.dbRoles!.urlAs(service, w.db.url), max: 1 });
  const denied = async (pool: pg.Pool, sql: string) =>
    assert.rejects(pool.query(sql), (e: Error & { code?: string }) => e.code === PERMISSION_DENIED && /permission denied/.test(e.message), sql);
  const bridge = as("asd-bridge");
  const sender = as("smtp-sender");
  const archiver = as("archiver");
  try {
    await denied(bridge, "UPDATE messages SET subject = 'changed'");
    await denied(bridge, "INSERT INTO messages (message_key) VALUES ('forged')");
    await denied(bridge, "DELETE FROM attachments");
    await denied(bridge, "SELECT * FROM sends");
    await denied(sender, "UPDATE messages SET subject = 'changed'");
    await denied(sender, "UPDATE sessions SET state = 'closed'");
    await denied(sender, "SELECT body_text FROM agent_replies");
    await denied(archiver, "UPDATE sends SET state = 'failed'");
    await denied(archiver, "SELECT * FROM sessions");
    for (const p of [bridge, sender, archiver]) await denied(p, "CREATE TABLE sneaky (id int)");
    // What each does own stays writable (a no-op update touches the privilege, not the data).
    await archiver.query("UPDATE messages SET subject = subject WHERE false");
    await bridge.query("UPDATE sessions SET state = state WHERE false");
    await sender.query("UPDATE sends SET state = state WHERE false");
  } finally {
    await Promise.all([bridge.end(), sender.end(), archiver.end()]);
  }
  assert.equal((await w.rows("SELECT 1 FROM messages WHERE subject = 'changed' OR message_key = 'forged'")).length, 0);
});
