// Defence in depth with the bus wide open (no NATS permissions): a command published on one
// mailbox's subject must not send, quote or forward anything of another tenant or mailbox.
// Real NATS and PostgreSQL; the "SMTP server" is a TCP listener that only counts connections, so
// any attempt to send would show up as a connection.
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PostroomConfig, type PostroomConfigInput } from "@postroom/config";
import { names as namesOf, SendFailed, streamDefinitions, type Names, type SendRequested } from "@postroom/contracts";
import { createPool, migrate, type Pool } from "@postroom/db";
import { connectNats, ensureStreams, jetStreamOf, publishJson, type NatsConnection } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import {
  cleanupNamespace,
  createTestDatabase,
  dbRolesInTests,
  freePort,
  natsUrl,
  setUpTestDatabaseRoles,
  tempDir,
  testNamespace,
  waitFor,
  type TempDir,
  type TestDatabase,
  type TestDatabaseRoles,
} from "@postroom/testkit";
import { SmtpSender } from "./sender.js";

let db: TestDatabase;
let pool: Pool;
// POSTROOM_TEST_DB_ROLES=1: the sender logs in as its own role; the test seeds as the owner.
let roles: TestDatabaseRoles | undefined;
let nc: NatsConnection;
let n: Names;
let root: string;
let dir: TempDir;
let smtp: Server;
let sender: SmtpSender;
let smtpConnections = 0;
const failed: { subject: string; event: SendFailed }[] = [];
const sent: string[] = [];

const GLOBEX_ORIGINAL = "globex/support/imap/INBOX/1/7";

before(async () => {
  dir = tempDir("smtp-guard");
  db = await createTestDatabase("smtpguard");
  pool = createPool(db.url, { max: 2 });
  await migrate(pool);
  roles = dbRolesInTests() ? await setUpTestDatabaseRoles(db.url) : undefined;
  root = testNamespace("smtpguard");
  n = namesOf(root);
  nc = await connectNats({ url: natsUrl(), name: "smtp-guard-test" });
  await ensureStreams(nc, streamDefinitions(n));
  smtp = createServer((socket) => {
    smtpConnections++;
    socket.destroy();
  });
  const port = await freePort();
  await new Promise<void>((resolve) => smtp.listen(port, "127.0.0.1", resolve));

  const mailbox = (tenant: string) => ({
    id: "support",
    address: `support@${tenant}.test`,
    inbound: { protocol: "imap" as const, host: "127.0.0.1", port: 1, tls: "none" as const },
    auth: { type: "password" as const, password: "env:UNUSED" },
    smtp: { host: "127.0.0.1", port, tls: "none" as const },
  });
  const input: PostroomConfigInput = {
    version: 1,
    nats: { url: natsUrl(), namespace: root },
    database: { url: db.url },
    archive: { path: join(dir.path, "archive") },
    tenants: [
      { id: "acme", acd: { type: "builtin" }, mailboxes: [mailbox("acme")] },
      { id: "globex", acd: { type: "builtin" }, mailboxes: [mailbox("globex")] },
    ],
  };
  const config = PostroomConfig.parse(input);

  // globex's confidential email with an attachment, archived as the archiver would.
  const archivePath = join(dir.path, "archive", "globex", "support", "7");
  await mkdir(join(archivePath, "parts"), { recursive: true });
  await writeFile(join(archivePath, "message.eml"), "Subject: Merger\r\n\r\nconfidential\r\n");
  await writeFile(join(archivePath, "parts", "1-plan.pdf"), "%PDF-1.7 confidential");
  const conversation = await pool.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox, subject) VALUES ('globex', 'support', 'Merger') RETURNING id");
  const message = await pool.query<{ id: string }>(
    `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, rfc_message_id, subject, from_address, received_at, size, sha256, archive_path, text_body, conversation_id)
     VALUES ($1, 'globex', 'support', 'inbound', 'imap', '<merger@globex.test>', 'Merger', 'ceo@globex.test', now(), 40, $2, $3, 'confidential', $4) RETURNING id`,
    [GLOBEX_ORIGINAL, "0".repeat(64), archivePath, conversation.rows[0]!.id],
  );
  await pool.query(
    `INSERT INTO attachments (message_id, part_index, original_name, stored_name, content_type, size, sha256) VALUES ($1, 1, 'plan.pdf', '1-plan.pdf', 'application/pdf', 21, $2)`,
    [message.rows[0]!.id, "0".repeat(64)],
  );
  // A row whose key claims acme's mailbox while its columns say globex: the columns decide.
  await pool.query(
    `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, rfc_message_id, subject, from_address, received_at, size, sha256, archive_path, conversation_id)
     VALUES ('acme/support/imap/INBOX/1/99', 'globex', 'support', 'inbound', 'imap', '<odd@globex.test>', 'Odd', 'ceo@globex.test', now(), 40, $1, $2, $3)`,
    ["0".repeat(64), archivePath, conversation.rows[0]!.id],
  );
  // globex's command, already sent.
  await pool.query(
    `INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id, raw_object, raw_size, raw_sha256, envelope, server_response, sent_at)
     VALUES ('globex-reply-0001', 'globex', 'support', 'reply', 'sent', '<r@globex.test>', 'globex/support/sent/globex-reply-0001', 10, $1, $2, '250 ok', now())`,
    ["0".repeat(64), JSON.stringify({ from: "support@globex.test", to: ["partner@globex.test"] })],
  );

  const watch = async (subject: string, into: (subject: string, data: unknown) => void) => {
    const sub = nc.subscribe(subject);
    void (async () => {
      for await (const m of sub) into(m.subject, m.json());
    })();
  };
  await watch(n.subjects.wildcard.mailSendFailed(), (subject, data) => failed.push({ subject, event: SendFailed.parse(data) }));
  await watch(n.subjects.wildcard.mailSent(), (subject) => sent.push(subject));
  await nc.flush();

  sender = new SmtpSender({ nc, names: n, config, pool: roles?.poolAs("smtp-sender", { max: 2 }) ?? pool, logger: createLogger({ service: "smtp-sender", level: "silent" }) });
  await sender.start();
});

after(async () => {
  await sender?.stop();
  await nc?.drain();
  await cleanupNamespace(natsUrl(), root).catch(() => undefined);
  await pool?.end();
  await db?.drop();
  await roles?.drop();
  await new Promise((resolve) => smtp?.close(resolve));
  dir?.remove();
});

function command(commandId: string, fields: Partial<SendRequested>): SendRequested {
  return { version: "v1", commandId, tenant: "acme", mailbox: "support", kind: "forward", to: ["outsider@evil.test"], cc: [], bcc: [], text: "fyi", requestedAt: new Date().toISOString(), ...fields };
}

async function refusal(commandId: string): Promise<{ subject: string; event: SendFailed }> {
  return waitFor(async () => failed.find((f) => f.event.commandId === commandId), { timeoutMs: 15_000, what: `send-failed for ${commandId}` });
}

async function sendsRow(commandId: string): Promise<{ tenant: string; state: string; attempts: number; last_error: string | null } | undefined> {
  const r = await pool.query("SELECT tenant, state, attempts, last_error FROM sends WHERE command_id = $1", [commandId]);
  return r.rows[0];
}

test("a forward of another tenant's email is refused with a clear reason, its attachments never read, nothing sent", async () => {
  await publishJson(jetStreamOf(nc), n.subjects.mailSend("acme", "support"), command("forward-globex-1", { original: GLOBEX_ORIGINAL, forwardAs: "inline" }), { msgId: "forward-globex-1" });
  const { subject, event } = await refusal("forward-globex-1");
  assert.equal(subject, n.subjects.mailSendFailed("acme", "support"));
  assert.equal(event.permanent, true);
  assert.match(event.reason, /the original globex\/support\/imap\/INBOX\/1\/7 is not an email of mailbox acme\/support/);
  const row = await sendsRow("forward-globex-1");
  assert.equal(row?.state, "failed");
  assert.equal(row?.attempts, 0, "no SMTP attempt was counted");
  const stored = await pool.query("SELECT raw_object FROM sends WHERE command_id = 'forward-globex-1'");
  assert.equal(stored.rows[0]?.raw_object, null, "nothing was composed from globex's archive");
});

test("a reply to a row that belongs to another tenant is refused even when its key looks like our mailbox's", async () => {
  await publishJson(jetStreamOf(nc), n.subjects.mailSend("acme", "support"), command("reply-odd-0001", { kind: "reply", original: "acme/support/imap/INBOX/1/99" }), { msgId: "reply-odd-0001" });
  const { event } = await refusal("reply-odd-0001");
  assert.match(event.reason, /is not an email of mailbox acme\/support/);
  assert.equal((await sendsRow("reply-odd-0001"))?.attempts, 0);
});

test("a command whose body names another tenant than its subject is refused on the subject's mailbox and leaves the named mailbox untouched", async () => {
  await publishJson(jetStreamOf(nc), n.subjects.mailSend("acme", "support"), command("new-as-globex-1", { kind: "new", tenant: "globex", subject: "hello" }), { msgId: "new-as-globex-1" });
  const { subject, event } = await refusal("new-as-globex-1");
  assert.equal(subject, n.subjects.mailSendFailed("acme", "support"), "told where the publisher was allowed to publish");
  assert.equal(event.tenant, "acme");
  assert.match(event.reason, /names mailbox globex\/support but was sent to acme\/support/);
  assert.equal(await sendsRow("new-as-globex-1"), undefined, "no row for globex's mailbox");
});

test("a command reusing another mailbox's command id neither sends nor republishes that mailbox's sent message", async () => {
  await publishJson(jetStreamOf(nc), n.subjects.mailSend("acme", "support"), command("globex-reply-0001", { kind: "new", subject: "hello" }), { msgId: "acme-reuse-1" });
  const { event } = await refusal("globex-reply-0001");
  assert.equal(event.tenant, "acme");
  assert.match(event.reason, /already used by another mailbox's command/);
  const row = await sendsRow("globex-reply-0001");
  assert.deepEqual({ tenant: row?.tenant, state: row?.state }, { tenant: "globex", state: "sent" }, "globex's row is unchanged");
});

test("a command over the mailbox's recipient cap (smtp.maxRecipients, 50 by default) is refused before anything is composed or sent", async () => {
  const to = Array.from({ length: 30 }, (_, i) => `to${i}@outside.test`);
  const bcc = Array.from({ length: 21 }, (_, i) => `bcc${i}@outside.test`);
  await publishJson(jetStreamOf(nc), n.subjects.mailSend("acme", "support"), command("new-51-rcpt-1", { kind: "new", subject: "hello", to, bcc }), { msgId: "new-51-rcpt-1" });
  const { event } = await refusal("new-51-rcpt-1");
  assert.equal(event.permanent, true);
  assert.equal(event.reason, "the message has 51 recipients, more than the mailbox allows in one message (50, smtp.maxRecipients): send to fewer");
  const row = await sendsRow("new-51-rcpt-1");
  assert.deepEqual([row?.state, row?.attempts], ["failed", 0]);
});

test("none of the refused commands reached the SMTP server or produced a mail.sent", async () => {
  // Runs last: every command above has been refused by now, so any attempt would have happened.
  assert.ok(failed.length >= 5);
  assert.equal(smtpConnections, 0);
  assert.deepEqual(sent, []);
});
