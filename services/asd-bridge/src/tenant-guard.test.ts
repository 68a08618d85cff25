// Defence in depth with the bus wide open (no NATS permissions): an event on one tenant's subject
// whose payload names another tenant, mailbox or message must never put anything on an agent's
// desk. Real NATS and PostgreSQL, the bridge's real consumers.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import type { MailArchived, MailSent } from "@postroom/contracts";
import { jetStreamOf, publishJson } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { BridgeHarness, call, mailbox } from "./test-harness.js";
import { checkSubject } from "./tenant-guard.js";

let h: BridgeHarness;
let api: string;
const env = { ANN_PW: "ann-guard-pw" };

before(async () => {
  h = await BridgeHarness.create(
    "bridgeguard",
    () => ({
      tenants: [
        { id: "acme", agents: [{ id: "ann", password: "env:ANN_PW", queues: ["email"], maxSessions: 10 }], mailboxes: [mailbox("support", "acme"), mailbox("sales", "acme")] },
        { id: "globex", mailboxes: [mailbox("support", "globex")] },
      ],
    }),
    env,
  );
  await h.bridge.start();
  api = h.bridge.api!.url;
});

after(async () => {
  await h?.close();
});

/** globex's confidential email as the archiver stored it, never announced (so no session of its own holds its id). */
async function globexRow(): Promise<{ id: string; key: string }> {
  const key = "globex/support/imap/INBOX/1/4242";
  const conv = await h.pool.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox, subject) VALUES ('globex', 'support', 'Merger') RETURNING id");
  const r = await h.pool.query<{ id: string }>(
    `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, folder, uid_validity, uid, rfc_message_id, subject, from_address, received_at, size, sha256, archive_path, text_body, conversation_id)
     VALUES ($1, 'globex', 'support', 'inbound', 'imap', 'INBOX', 1, 4242, '<merger@globex.test>', 'Merger', 'ceo@globex.test', now(), 40, $2, '/nowhere', 'confidential', $3) RETURNING id`,
    [key, "0".repeat(64), conv.rows[0]!.id],
  );
  return { id: r.rows[0]!.id, key };
}

const archived = (over: Partial<MailArchived>): MailArchived => {
  const now = new Date().toISOString();
  return {
    version: "v1", messageKey: "acme/support/imap/INBOX/1/999", tenant: "acme", mailbox: "support", messageId: "1", conversationId: "1", archivePath: "/nowhere", size: 40, sha256: "0".repeat(64),
    rfcMessageId: "<x@y>", subject: "Merger", from: "ceo@globex.test", to: [], cc: [], flags: { autoReply: false, bounce: false, loop: false }, classification: "human", classificationReason: null,
    parseError: null, offer: true, receivedAt: now, archivedAt: now, source: { protocol: "imap", tenant: "acme", mailbox: "support", folder: "INBOX", uidValidity: 1, uid: 999 }, ...over,
  };
};

async function drained(durable: string): Promise<void> {
  const jsm = await jetstreamManager(h.nc);
  await waitFor(async () => {
    const i = await jsm.consumers.info(h.names.streams.mail, durable);
    // Terminated counts as done: nothing pending, nothing waiting to be redelivered.
    return i.num_pending === 0 && i.num_ack_pending === 0;
  }, { timeoutMs: 15_000, what: `${durable} drained` });
}

test("an archived event on acme's subject naming globex's message, tenant or mailbox is refused, counted and never offered", async () => {
  const globex = await globexRow();
  const js = jetStreamOf(h.nc);
  const acmeSubject = h.names.subjects.mailArchived("acme", "support");
  const forged: [string, MailArchived][] = [
    // globex's row id under acme's tenant, mailbox and a made-up acme key.
    [acmeSubject, archived({ messageId: globex.id })],
    // globex's row id and key, claiming to be acme's.
    [acmeSubject, archived({ messageId: globex.id, messageKey: globex.key })],
    // The payload says globex outright, on acme's subject.
    [acmeSubject, archived({ tenant: "globex", messageId: globex.id, messageKey: globex.key })],
    // Another mailbox of the same tenant than the subject's.
    [h.names.subjects.mailArchived("acme", "sales"), archived({ messageId: globex.id })],
    // A row id that does not exist.
    [acmeSubject, archived({ messageId: "987654321" })],
  ];
  for (const [i, [subject, e]] of forged.entries()) await publishJson(js, subject, e, { msgId: `forged-${i}` });
  await drained(h.names.consumers.asdBridgeArchived());

  assert.equal(h.bridge.stats.refused, forged.length, "each one refused and counted");
  const sessions = await h.pool.query("SELECT tenant, message_id FROM sessions");
  assert.deepEqual(sessions.rows, [], "no session for any of them");
  const logged = h.logs.join("");
  for (const reason of ["foreign-message", "subject-mismatch", "unknown-message"]) assert.match(logged, new RegExp(`"reason":"${reason}".*"msg":"event refused`), reason);

  // The real thing still works: acme's own email is offered to acme's agent.
  const ann = (await call(api, "POST", "/api/login", undefined, { tenant: "acme", agent: "ann", password: env.ANN_PW })).body.token as string;
  await call(api, "POST", "/api/queues/login", ann, { queues: ["email"] });
  const { messageId } = await h.deliver("acme", "support", { subject: "Real question" });
  await waitFor(async () => (await h.sessionOf(messageId))?.state === "assigned", { timeoutMs: 15_000, what: "acme's own email assigned" });
  const mine = await call(api, "GET", "/api/sessions", ann);
  assert.deepEqual((mine.body.sessions as { subject: string }[]).map((s) => s.subject), ["Real question"], "ann sees her tenant's email only");
});

test("a send result on one mailbox's subject cannot mark another tenant's reply sent", async () => {
  const ann = (await call(api, "POST", "/api/login", undefined, { tenant: "acme", agent: "ann", password: env.ANN_PW })).body.token as string;
  const s = (await call(api, "GET", "/api/sessions", ann)).body.sessions as { id: string }[];
  const reply = await call(api, "POST", `/api/sessions/${s[0]!.id}/reply`, ann, { text: "On its way", requestId: "guard-reply-01" });
  assert.equal(reply.status, 202, JSON.stringify(reply.body));
  const commandId = reply.body.commandId as string;
  const sent = (tenant: string): MailSent => ({
    version: "v1", commandId, tenant, mailbox: "support", rfcMessageId: "<forged@globex.test>", inReplyTo: null, references: [], raw: { bucket: "b", name: "n", size: 1, sha256: "0".repeat(64) },
    envelope: { from: "support@globex.test", to: ["x@outside.example"] }, serverResponse: "250 forged", refused: [], sentAt: new Date().toISOString(),
  });
  const js = jetStreamOf(h.nc);
  const refusedBefore = h.bridge.stats.refused;
  // On globex's subject, naming acme's command: the subject agrees with the payload, but the row is acme's.
  await publishJson(js, h.names.subjects.mailSent("globex", "support"), sent("globex"), { msgId: "forged-sent-1" });
  // On globex's subject with acme in the payload: refused outright.
  await publishJson(js, h.names.subjects.mailSent("globex", "support"), sent("acme"), { msgId: "forged-sent-2" });
  await drained(h.names.consumers.asdBridgeSent());
  assert.equal(h.bridge.stats.refused, refusedBefore + 1);
  const replies = await call(api, "GET", `/api/sessions/${s[0]!.id}/replies`, ann);
  assert.deepEqual((replies.body.replies as { state: string }[]).map((r) => r.state), ["queued"], "acme's reply is untouched");
});

test("checkSubject takes tenant and mailbox from the subject only", () => {
  const n = h.names.subjects;
  assert.equal(checkSubject(n.mailArchived, n.mailArchived("acme", "support"), { tenant: "acme", mailbox: "support" }), undefined);
  assert.equal(checkSubject(n.mailArchived, n.mailArchived("acme", "support"), { tenant: "globex", mailbox: "support" })?.reason, "subject-mismatch");
  assert.equal(checkSubject(n.mailArchived, n.mailSent("acme", "support"), { tenant: "acme", mailbox: "support" })?.reason, "not-a-mailbox-subject");
});
