import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { simpleParser } from "mailparser";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { COLLEAGUE, CUSTOMER, RECORDS, SendWorld, SUPPORT, TEAM } from "../support/send-world.js";

let w: SendWorld;

before(async () => {
  w = await SendWorld.create("sendreply", { env: { POSTROOM_SENT_FOLDER: "Sent" } });
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

test("an agent's reply reaches the customer's mailbox through Postfix: right From/To/CC, BCC delivered but hidden, Re: once, threaded, original quoted; the customer's answer joins the conversation", async () => {
  const raw = customerEmail({
    from: CUSTOMER,
    to: SUPPORT,
    subject: "AW: RE: Delivery 4711",
    messageId: "<delivery-4711@customer.test>",
    extraHeaders: ["References: <older-1@customer.test>", `Cc: ${COLLEAGUE}`],
    body: "Hello,\r\nmy parcel 4711 has not arrived.\r\nAnn",
  });
  const key = await w.archivedOriginal(raw);

  await w.requestSend({ commandId: "reply-delivery-4711", kind: "reply", original: key, to: [CUSTOMER], text: "Dear Ann,\nit left our warehouse today.", html: "<p>Dear Ann,<br>it left our warehouse today.</p>" });

  const [received] = await w.waitForMail(CUSTOMER, (m) => m.includes("Delivery 4711") && m.includes("warehouse"));
  const parsed = await simpleParser(received!);
  assert.equal(parsed.subject, "Re: Delivery 4711", "Re: exactly once, the localized AW:/RE: prefixes gone");
  assert.equal(parsed.from?.value[0]?.address, SUPPORT);
  assert.equal(parsed.from?.value[0]?.name, "ACME Support");
  assert.deepEqual(parsed.to && !Array.isArray(parsed.to) ? parsed.to.value.map((a) => a.address) : [], [CUSTOMER]);
  assert.deepEqual(parsed.cc && !Array.isArray(parsed.cc) ? parsed.cc.value.map((a) => a.address) : [], [TEAM], "the campaign's default CC");
  assert.equal(parsed.inReplyTo, "<delivery-4711@customer.test>");
  assert.deepEqual(parsed.references, ["<older-1@customer.test>", "<delivery-4711@customer.test>"]);
  assert.match(parsed.text ?? "", /it left our warehouse today\.\n\nOn .*ann@customer\.test.* wrote:\n> Hello,\n> my parcel 4711 has not arrived\./);
  assert.match(parsed.html || "", /<blockquote type="cite"[^>]*>[\s\S]*my parcel 4711 has not arrived[\s\S]*<\/blockquote>/, "quoted in HTML too");
  assert.equal(parsed.headers.get("bcc"), undefined, "BCC is not in the headers");
  const messageId = parsed.messageId!;

  // BCC and CC copies were delivered into their own mailboxes, the same message.
  const [bccCopy] = await w.waitForMail(RECORDS, (m) => m.includes(messageId));
  assert.ok(!bccCopy!.toString("latin1").includes(RECORDS), "the BCC copy does not name its recipient either");
  await w.waitForMail(TEAM, (m) => m.includes(messageId));

  // The customer answers from her mail client; the archiver threads it into the same conversation.
  await w.sendAs(CUSTOMER, { to: SUPPORT, subject: "Re: Delivery 4711", text: "Thanks, it arrived.", inReplyTo: messageId, references: [...(parsed.references as string[]), messageId] });
  const conversation = await waitFor(
    async () => {
      const rows = await w.rows<{ direction: string; conversation_id: string; subject: string; message_key: string }>(
        `SELECT direction, conversation_id, subject, message_key FROM messages
          WHERE conversation_id = (SELECT conversation_id FROM messages WHERE message_key = $1) ORDER BY id`,
        [key],
      );
      return rows.length === 3 ? rows : undefined;
    },
    { timeoutMs: 30_000, what: () => `original, reply and answer in one conversation\n${w.system.dump()}` },
  );
  assert.deepEqual(conversation.map((r) => r.direction), ["inbound", "outbound", "inbound"]);
  assert.equal(conversation[1]!.message_key, "acme/support/sent/reply-delivery-4711");
  assert.match(conversation[2]!.subject, /^Re: Delivery 4711$/);

  // The archived copy of the reply is byte for byte what Postfix accepted (Postfix only prepends its trace headers).
  const [sentRow] = await w.rows<{ sha256: string }>("SELECT sha256 FROM messages WHERE message_key = $1", ["acme/support/sent/reply-delivery-4711"]);
  const [sendRow] = await w.rows<{ raw_sha256: string; state: string; attempts: number }>("SELECT raw_sha256, state, attempts FROM sends WHERE command_id = $1", ["reply-delivery-4711"]);
  assert.equal(sendRow!.state, "sent");
  assert.equal(sendRow!.attempts, 1);
  assert.equal(sentRow!.sha256, sendRow!.raw_sha256);

  // A copy in the support mailbox's Sent folder, for people who read the mailbox directly.
  const inSent = await waitFor(async () => {
    const m = await w.inbox(SUPPORT, "Sent");
    return m.length ? m : undefined;
  }, { timeoutMs: 15_000, what: () => `copy in Sent\n${w.system.dump()}` });
  assert.equal(inSent.filter((m) => m.toString("latin1").includes(messageId)).length, 1);
});

test("reply all answers the customer and her colleague, not the contact centre itself; the same command again sends nothing", async () => {
  const raw = customerEmail({ from: CUSTOMER, to: SUPPORT, subject: "Team order", messageId: "<team-order@customer.test>", extraHeaders: [`Cc: ${COLLEAGUE}`] });
  const key = await w.archivedOriginal(raw);
  const command = { commandId: "reply-all-team-order", kind: "reply-all", original: key, to: [], text: "Both of you: done." };
  await w.requestSend(command);
  const [toAnn] = await w.waitForMail(CUSTOMER, (m) => m.includes("Re: Team order"));
  const parsed = await simpleParser(toAnn!);
  const all = [parsed.to, parsed.cc].flatMap((a) => (a && !Array.isArray(a) ? a.value.map((v) => v.address) : []));
  assert.deepEqual(all.sort(), [COLLEAGUE, CUSTOMER, TEAM].sort());
  await w.waitForMail(COLLEAGUE, (m) => m.includes("Re: Team order"));
  assert.equal((await w.inbox(SUPPORT)).filter((m) => m.toString("latin1").includes("Both of you: done.")).length, 0, "no copy to the support mailbox");

  // A redelivered command (same id, outside JetStream's duplicate window: a new publish id) is recognised by its row.
  await w.requestSend(command, "reply-all-team-order-redelivered");
  await waitFor(() => w.system.logs.some((l) => l.service === "smtp-sender" && l.line.includes("command already sent")), {
    timeoutMs: 15_000,
    what: () => `the redelivered command recognised\n${w.system.dump()}`,
  });
  assert.equal((await w.inbox(CUSTOMER)).filter((m) => m.toString("latin1").includes("Re: Team order")).length, 1, "exactly one copy");
  // The redelivery also tried the Sent copy again, found the first one and added none.
  await waitFor(() => w.system.logs.some((l) => l.service === "smtp-sender" && l.line.includes("reply-all-team-order") && l.line.includes("already-there")), {
    timeoutMs: 15_000,
    what: () => `the Sent copy recognised\n${w.system.dump()}`,
  });
  assert.equal((await w.inbox(SUPPORT, "Sent")).filter((m) => m.toString("latin1").includes("Both of you: done.")).length, 1, "and one in the Sent folder");
});

test("a subject or an address with CR/LF is refused with a clear error and nothing reaches Postfix", async () => {
  const logBefore = (await w.postfix.readLog()).length;
  await w.requestSend({ commandId: "new-injected-subject", kind: "new", to: [CUSTOMER], subject: "Hello\r\nBcc: victim@customer.test", text: "x" });
  await w.requestSend({ commandId: "new-injected-address", kind: "new", to: ["ann@customer.test\r\nBcc: victim@customer.test"], subject: "Hello", text: "x" });
  for (const id of ["new-injected-subject", "new-injected-address"]) {
    const [row] = await waitFor(
      async () => {
        const rows = await w.rows<{ state: string; last_error: string; attempts: number }>("SELECT state, last_error, attempts FROM sends WHERE command_id = $1", [id]);
        return rows[0]?.state === "failed" ? rows : undefined;
      },
      { timeoutMs: 15_000, what: () => `${id} failed\n${w.system.dump()}` },
    );
    assert.equal(row!.attempts, 0, "no SMTP attempt was made");
    assert.match(row!.last_error, /(subject|to) contains a line break or control character; refused to prevent header injection/);
  }
  // The agent's side hears about each as a final failure.
  const failed = await waitFor(
    async () => {
      const events = await w.events<{ commandId: string; reason: string; permanent: boolean }>(w.names.subjects.mailSendFailed("acme", "support"));
      const ours = events.filter((e) => e.commandId.startsWith("new-injected-"));
      return ours.length === 2 ? ours : undefined;
    },
    { timeoutMs: 10_000, what: "two failed events" },
  );
  assert.deepEqual(failed.map((e) => e.commandId).sort(), ["new-injected-address", "new-injected-subject"]);
  for (const e of failed) {
    assert.equal(e.permanent, true);
    assert.match(e.reason, /header injection/);
  }
  const newLog = (await w.postfix.readLog()).slice(logBefore);
  assert.ok(!/connect from/.test(newLog), `no connection reached Postfix:\n${newLog}`);
});
