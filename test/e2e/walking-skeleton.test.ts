import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { simpleParser } from "mailparser";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { E2eWorld, SUPPORT } from "../support/fixture.js";

let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("skeleton");
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

test("a customer's email is archived byte for byte, offered to an agent, and only then marked seen", async () => {
  const raw = customerEmail({ to: SUPPORT, subject: "Where is my order?" });
  const started = Date.now();
  const { uid, uidValidity } = await w.dovecot.appendMessage(SUPPORT, raw);
  const key = `acme/support/imap/INBOX/${uidValidity}/${uid}`;

  const [row] = await waitFor(
    async () => {
      const rows = await w.rows<{ id: string; subject: string; from_address: string; direction: string }>(
        "SELECT id, subject, from_address, direction FROM messages WHERE message_key = $1",
        [key],
      );
      return rows.length ? rows : undefined;
    },
    { timeoutMs: 20_000, what: () => `message row\n${w.system.dump()}` },
  );
  assert.equal(row!.subject, "Where is my order?");
  assert.equal(row!.from_address, "ann@customer.example");
  assert.equal(row!.direction, "inbound");
  // IDLE, not the 30 s poll, brought it in.
  assert.ok(Date.now() - started < 5_000, `picked up in ${Date.now() - started} ms`);

  assert.deepEqual(await w.emlOf(key), raw, "the archived .eml is byte-identical to what the customer sent");

  // The built-in distributor queues a session as soon as it is offered, so look at its history.
  const [session] = await waitFor(
    async () => {
      const s = await w.rows<{ id: string; queue: string }>(
        "SELECT s.id, s.queue FROM sessions s JOIN session_events e ON e.session_id = s.id AND e.state = 'offered' WHERE s.message_id = $1",
        [row!.id],
      );
      return s.length ? s : undefined;
    },
    { timeoutMs: 15_000, what: () => `session offered\n${w.system.dump()}` },
  );
  assert.equal(session!.queue, "email");

  const flags = await waitFor(
    async () => {
      const f = (await w.dovecot.flagsOf(SUPPORT)).get(uid);
      return f?.includes("\\Seen") ? f : undefined;
    },
    { timeoutMs: 15_000, what: () => `\\Seen flag on the source message\n${w.system.dump()}` },
  );
  assert.ok(flags.includes("\\Seen"));
});

test("an agent's reply goes out threaded, with the campaign's BCC, and joins the conversation", async () => {
  const raw = customerEmail({ to: SUPPORT, subject: "Invoice question", messageId: "<invoice-1@customer.example>" });
  const { uid, uidValidity } = await w.dovecot.appendMessage(SUPPORT, raw);
  const key = `acme/support/imap/INBOX/${uidValidity}/${uid}`;
  await waitFor(async () => (await w.rows("SELECT 1 FROM messages WHERE message_key = $1", [key])).length > 0, {
    timeoutMs: 20_000,
    what: () => `original archived\n${w.system.dump()}`,
  });

  const before = w.smtp.messages.length;
  await w.requestSend({ commandId: "reply-invoice-1", tenant: "acme", mailbox: "support", kind: "reply", original: key, to: ["ann@customer.example"], text: "Your invoice is attached." });
  const [sent] = (await w.smtp.waitForMessages(before + 1, 20_000)).slice(before);
  const parsed = await simpleParser(sent!.raw);
  assert.equal(parsed.subject, "Re: Invoice question");
  assert.equal(parsed.inReplyTo, "<invoice-1@customer.example>");
  assert.equal(parsed.from?.value[0]?.address, SUPPORT);
  assert.ok(!sent!.raw.toString().includes("records@acme.test"), "BCC is not in the headers");
  assert.deepEqual([...sent!.envelope.rcptTo].sort(), ["ann@customer.example", "records@acme.test"], "but it is delivered");
  assert.match(parsed.text ?? "", /> my order 4711|> Hello/, "the original is quoted");

  const thread = await waitFor(
    async () => {
      const rows = await w.rows<{ direction: string; conversation_id: string }>(
        "SELECT direction, conversation_id FROM messages WHERE message_key = ANY($1) ORDER BY id",
        [[key, "acme/support/sent/reply-invoice-1"]],
      );
      return rows.length === 2 ? rows : undefined;
    },
    { timeoutMs: 15_000, what: () => `sent reply archived\n${w.system.dump()}` },
  );
  assert.deepEqual(thread.map((r) => r.direction), ["inbound", "outbound"]);
  assert.equal(thread[0]!.conversation_id, thread[1]!.conversation_id, "the reply is in the original's conversation");

  // Redelivering the same command does not send it twice.
  await w.requestSend({ commandId: "reply-invoice-1", tenant: "acme", mailbox: "support", kind: "reply", original: key, to: ["ann@customer.example"], text: "Your invoice is attached." });
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(w.smtp.messages.length, before + 1);
});
