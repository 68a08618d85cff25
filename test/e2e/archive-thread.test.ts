import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { simpleParser } from "mailparser";
import { customerEmail } from "../support/mail.js";
import { E2eWorld, SUPPORT } from "../support/fixture.js";

let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("archthread");
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

async function archived(key: string) {
  const [row] = await waitFor(async () => {
    const r = await w.rows<{ conversation_id: string; rfc_message_id: string; direction: string }>(
      "SELECT conversation_id, rfc_message_id, direction FROM messages WHERE message_key = $1",
      [key],
    );
    return r.length ? r : undefined;
  }, { timeoutMs: 30_000, what: () => `${key} archived\n${w.system.dump()}` });
  return row!;
}

test("an agent's reply and the customer's answers to it end up in one conversation with the original message", async () => {
  const original = await w.dovecot.appendMessage(SUPPORT, customerEmail({ to: SUPPORT, subject: "Broken kettle", messageId: "<kettle-1@customer.example>" }));
  const originalKey = `acme/support/imap/INBOX/${original.uidValidity}/${original.uid}`;
  const first = await archived(originalKey);

  const before = w.smtp.messages.length;
  await w.requestSend({ commandId: "reply-kettle-1", tenant: "acme", mailbox: "support", kind: "reply", original: originalKey, to: ["ann@customer.example"], text: "Please send a photo." });
  const [sent] = (await w.smtp.waitForMessages(before + 1, 30_000)).slice(before);
  const reply = await archived("acme/support/sent/reply-kettle-1");
  assert.equal(reply.direction, "outbound");
  assert.equal(reply.conversation_id, first.conversation_id, "the reply joins the original's conversation");
  const replyId = (await simpleParser(sent!.raw)).messageId!;
  assert.equal(reply.rfc_message_id, replyId, "the archived reply carries the Message-ID the customer received");

  // The customer answers the agent's reply, as a mail client does: In-Reply-To the reply, References the chain.
  const answer = await w.dovecot.appendMessage(
    SUPPORT,
    customerEmail({ to: SUPPORT, subject: "Re: Re: Broken kettle", extraHeaders: [`In-Reply-To: ${replyId}`, `References: <kettle-1@customer.example> ${replyId}`] }),
  );
  const answerRow = await archived(`acme/support/imap/INBOX/${answer.uidValidity}/${answer.uid}`);
  assert.equal(answerRow.conversation_id, first.conversation_id, "the customer's answer joins the same conversation");

  // A client that keeps only References (no In-Reply-To) naming just the reply still threads.
  const second = await w.dovecot.appendMessage(SUPPORT, customerEmail({ to: SUPPORT, subject: "kettle photo", extraHeaders: [`References: ${replyId}`] }));
  const secondRow = await archived(`acme/support/imap/INBOX/${second.uidValidity}/${second.uid}`);
  assert.equal(secondRow.conversation_id, first.conversation_id);

  // An unrelated message starts its own conversation.
  const other = await w.dovecot.appendMessage(SUPPORT, customerEmail({ to: SUPPORT, subject: "Re: Broken kettle", extraHeaders: ["In-Reply-To: <someone-else@elsewhere.example>"] }));
  const otherRow = await archived(`acme/support/imap/INBOX/${other.uidValidity}/${other.uid}`);
  assert.notEqual(otherRow.conversation_id, first.conversation_id, "a matching subject alone does not merge conversations");

  const thread = await w.rows<{ direction: string }>("SELECT direction FROM messages WHERE conversation_id = $1 ORDER BY received_at, id", [first.conversation_id]);
  assert.deepEqual(thread.map((t) => t.direction).sort(), ["inbound", "inbound", "inbound", "outbound"]);
});
