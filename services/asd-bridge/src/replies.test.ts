import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { SendRequested, type MailSent, type SendFailed } from "@postroom/contracts";
import { jetStreamOf, publishJson } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { whatToDo, type ReplyView } from "./replies.js";
import { BridgeHarness, call, mailbox } from "./test-harness.js";

let h: BridgeHarness;
let api: string;
let token: string;
const env = { ANN_PW: "ann-replies-pw" };

before(async () => {
  h = await BridgeHarness.create(
    "replies",
    () => ({
      tenants: [
        {
          id: "acme",
          agents: [{ id: "ann", password: "env:ANN_PW", queues: ["email"], maxSessions: 10 }],
          mailboxes: [mailbox("support", "acme")],
        },
      ],
    }),
    env,
  );
  await h.bridge.start();
  api = h.bridge.api!.url;
  token = (await call(api, "POST", "/api/login", undefined, { tenant: "acme", agent: "ann", password: env.ANN_PW })).body.token as string;
  await call(api, "POST", "/api/queues/login", token, { queues: ["email"] });
});

after(async () => {
  await h?.close();
});

async function assigned(m: Parameters<BridgeHarness["deliver"]>[2]): Promise<string> {
  const { messageId } = await h.deliver("acme", "support", m);
  const s = await waitFor(async () => {
    const r = await h.sessionOf(messageId);
    return r?.state === "assigned" ? r : undefined;
  }, { timeoutMs: 30_000, what: "assigned to ann" });
  return s.id;
}

async function lastCommand(): Promise<SendRequested> {
  const stored = await (await jetstreamManager(h.nc)).streams.getMessage(h.names.streams.sendCommands, { last_by_subj: h.names.subjects.mailSend("acme", "support") });
  return SendRequested.parse(stored!.json());
}

async function replies(sessionId: string): Promise<ReplyView[]> {
  const r = await call(api, "GET", `/api/sessions/${sessionId}/replies`, token);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.replies as ReplyView[];
}

test("the agent sees that a reply goes to the Reply-To address before sending, the reply goes there, and an edited recipient list is sent as edited", async () => {
  const id = await assigned({ from: "noreply@forms.example", replyTo: ["ann@customer.example"], to: ["support@acme.test", "sales@acme.test"], cc: ["carl@customer.example"] });
  const view = await call(api, "GET", `/api/sessions/${id}`, token);
  assert.deepEqual(view.body.replyTargets, {
    reply: { to: ["ann@customer.example"], cc: [] },
    "reply-all": { to: ["ann@customer.example", "sales@acme.test"], cc: ["carl@customer.example"] },
  });
  assert.deepEqual((view.body.email as { replyTo: string[] }).replyTo, ["ann@customer.example"]);

  assert.equal((await call(api, "POST", `/api/sessions/${id}/reply`, token, { text: "Hello Ann", requestId: "rt-click-01" })).status, 202);
  const command = await lastCommand();
  assert.deepEqual([command.to, command.cc], [["ann@customer.example"], []], "the command carries what the agent was shown");

  const edited = await call(api, "POST", `/api/sessions/${id}/reply`, token, { text: "Hello again", requestId: "rt-click-02", to: ["Ann.Private@customer.example"], cc: [] });
  assert.equal(edited.status, 202);
  assert.deepEqual((await lastCommand()).to, ["ann.private@customer.example"]);
  const refused = await call(api, "POST", `/api/sessions/${id}/reply`, token, { text: "x", requestId: "rt-click-03", to: ["Ann <ann@customer.example>"] });
  assert.equal(refused.status, 400);
  assert.match(String(refused.body.error), /not a valid e-mail address/);

  const listed = await replies(id);
  assert.deepEqual(listed.map((r) => [r.state, r.to]), [["queued", ["ann@customer.example"]], ["queued", ["ann.private@customer.example"]]]);
});

test("send results reach the reply: sent with refused recipients, failed with the server's words and what to do, held then sent; a late or repeated event changes nothing", async () => {
  const id = await assigned({ subject: "Results" });
  const ids: string[] = [];
  for (const n of [1, 2, 3]) {
    const r = await call(api, "POST", `/api/sessions/${id}/reply-all`, token, { text: `answer ${n}`, requestId: `results-${n}-abc` });
    ids.push(r.body.commandId as string);
  }
  const js = jetStreamOf(h.nc);
  const now = new Date().toISOString();
  const sent = (commandId: string, refused: MailSent["refused"]): MailSent => ({
    version: "v1", commandId, tenant: "acme", mailbox: "support", rfcMessageId: `<${commandId}.postroom@acme.test>`, inReplyTo: null, references: [],
    raw: { bucket: "b", name: "n", size: 1, sha256: "0".repeat(64) }, envelope: { from: "support@acme.test", to: ["ann@customer.example"] },
    serverResponse: "250 2.0.0 Ok: queued as 4711", refused, sentAt: now,
  });
  const failed = (commandId: string, permanent: boolean, serverResponse: string, code: number): SendFailed => ({
    version: "v1", commandId, tenant: "acme", mailbox: "support", permanent, reason: serverResponse, serverResponse, responseCode: code, failedAt: now,
  });
  const pub = (subject: string, e: unknown, msgId: string) => publishJson(js, subject, e, { msgId });
  await pub(h.names.subjects.mailSent("acme", "support"), sent(ids[0]!, [{ recipient: "carl@customer.example", response: "550 5.1.1 <carl@customer.example>: Recipient address rejected: User unknown" }]), `${ids[0]}#sent`);
  await pub(h.names.subjects.mailSendFailed("acme", "support"), failed(ids[1]!, true, "550 5.1.1 <ann@customer.example>: Recipient address rejected: User unknown", 550), `${ids[1]}#failed`);
  await pub(h.names.subjects.mailSendFailed("acme", "support"), failed(ids[2]!, false, "535 5.7.8 Authentication failed", 535), `${ids[2]}#needs-admin`);
  // Events of sends that are not agent replies (alerts) find no reply and are acknowledged.
  await pub(h.names.subjects.mailSendFailed("acme", "support"), failed("alert-not-a-reply", true, "550 nope", 550), "alert-not-a-reply#failed");

  const states = async () => (await replies(id)).map((r) => r.state).join(",");
  await waitFor(async () => (await states()) === "sent,failed,held", { timeoutMs: 30_000, what: "sent, failed, held" });
  await pub(h.names.subjects.mailSent("acme", "support"), sent(ids[2]!, []), `${ids[2]}#sent`);
  await waitFor(async () => (await states()) === "sent,failed,sent", { timeoutMs: 30_000, what: "the held reply went out after the fix" });

  // Late and repeated events (another message id: past JetStream's dedupe) leave each reply as it is.
  await pub(h.names.subjects.mailSendFailed("acme", "support"), failed(ids[2]!, false, "535 again", 535), `${ids[2]}#needs-admin-again`);
  await pub(h.names.subjects.mailSent("acme", "support"), sent(ids[1]!, []), `${ids[1]}#sent-late`);
  await waitFor(async () => {
    const info = await Promise.all([h.names.consumers.asdBridgeSent(), h.names.consumers.asdBridgeSendFailed()].map(async (d) => (await jetstreamManager(h.nc)).consumers.info(h.names.streams.mail, d)));
    return info.every((i) => i.num_pending === 0 && i.num_ack_pending === 0);
  }, { timeoutMs: 30_000, what: "every result consumed" });
  const [first, second, third] = await replies(id);
  assert.equal(second!.state, "failed", "failed is final");
  assert.equal(third!.state, "sent", "sent is final");
  assert.deepEqual(first!.refused, [{ recipient: "carl@customer.example", response: "550 5.1.1 <carl@customer.example>: Recipient address rejected: User unknown" }]);
  assert.match(first!.whatToDo ?? "", /Some recipients did not get it/);
  assert.equal(second!.serverResponse, "550 5.1.1 <ann@customer.example>: Recipient address rejected: User unknown");
  assert.equal(second!.responseCode, 550);
  assert.match(second!.whatToDo ?? "", /address does not exist/);
  assert.equal(second!.text, "answer 2", "kept for an edit and retry");

  // A delivery report in the mailbox that names the first reply turns it into "bounced".
  const conv = await h.pool.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox) VALUES ('acme', 'support') RETURNING id");
  await h.pool.query(
    `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, folder, uid_validity, uid, rfc_message_id, received_at, size, sha256, archive_path, conversation_id,
       classification, bounce_of, bounce_status, bounce_diagnostic)
     VALUES ('acme/support/imap/INBOX/9/900', 'acme', 'support', 'inbound', 'imap', 'INBOX', 9, 900, '<dsn-1@mx.example>', now(), 1, 'x', '/tmp', $1, 'bounce', $2, '5.2.2', 'mailbox full')`,
    [conv.rows[0]!.id, `<${ids[0]}.postroom@acme.test>`],
  );
  const bounced = (await replies(id))[0]!;
  assert.equal(bounced.state, "bounced");
  assert.deepEqual([bounced.bounce?.status, bounced.bounce?.diagnostic], ["5.2.2", "mailbox full"]);
});

test("what to do follows the enhanced status code", () => {
  const base = { refused: [], reason: null };
  assert.match(whatToDo({ ...base, state: "failed", responseCode: 552, serverResponse: "552 5.2.2 Mailbox full" }) ?? "", /mailbox is full/);
  assert.match(whatToDo({ ...base, state: "failed", responseCode: 552, serverResponse: "552 5.3.4 Message size exceeds fixed limit" }) ?? "", /too large/);
  assert.match(whatToDo({ ...base, state: "failed", responseCode: 550, serverResponse: "550 5.7.1 Message rejected as spam" }) ?? "", /policy/);
  assert.match(whatToDo({ ...base, state: "held", responseCode: 535, serverResponse: "535 5.7.8" }) ?? "", /goes out by itself/);
  assert.equal(whatToDo({ ...base, state: "sent", responseCode: null, serverResponse: "250 ok" }), null);
  assert.equal(whatToDo({ ...base, state: "queued", responseCode: null, serverResponse: null }), null);
});
