import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { CUSTOMER, SendWorld, SUPPORT } from "../support/send-world.js";

let w: SendWorld;

before(async () => {
  w = await SendWorld.create("sendcrash");
  await w.system.start(["token-service", "imap-poller", "archiver", "asd-bridge"]);
  // Stops itself right after Postfix's 250 has been recorded, before mail.sent and the ack.
  w.system.startService("smtp-sender", { POSTROOM_FAILPOINT: "smtp-sender.after-accepted" });
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

test("smtp-sender killed with SIGKILL right after Postfix accepted a reply, then restarted: the customer receives it once and it is archived", async () => {
  const key = await w.archivedOriginal(customerEmail({ from: CUSTOMER, to: SUPPORT, subject: "Refund", messageId: "<refund-1@customer.test>" }));
  await w.requestSend({ commandId: "reply-refund-1", kind: "reply", original: key, to: [CUSTOMER], text: "Your refund is on its way." });

  await waitFor(() => w.system.logs.some((l) => l.service === "smtp-sender" && l.line.includes("failpoint reached")), {
    timeoutMs: 30_000,
    what: () => `the sender to reach its failpoint\n${w.system.dump()}`,
  });
  // Postfix has the message: its 250 came back and the row says so. Now the crash.
  assert.match(await w.postfix.readLog(), /postfix\/cleanup\[\d+\]: \w+: message-id=<[0-9a-f]{32}\.postroom@acme\.test>/);
  await w.system.stopService("smtp-sender", "SIGKILL");
  const [row] = await w.rows<{ state: string; attempts: number }>("SELECT state, attempts FROM sends WHERE command_id = $1", ["reply-refund-1"]);
  assert.deepEqual(row, { state: "sent", attempts: 1 });
  assert.equal((await w.rows("SELECT 1 FROM messages WHERE message_key = $1", ["acme/support/sent/reply-refund-1"])).length, 0, "not archived yet: mail.sent was never published");

  w.system.startService("smtp-sender");
  // JetStream redelivers the unacknowledged command once its ack wait runs out; the restarted
  // sender finds the row "sent", publishes mail.sent and acknowledges — without sending.
  await waitFor(async () => (await w.rows("SELECT 1 FROM messages WHERE message_key = $1", ["acme/support/sent/reply-refund-1"])).length === 1, {
    timeoutMs: 90_000,
    what: () => `the reply archived after the restart\n${w.system.dump()}`,
  });
  const copies = await w.waitForMail(CUSTOMER, (m) => m.includes("Your refund is on its way."));
  assert.equal(copies.length, 1);
  const submissions = (await w.postfix.readLog()).match(/postfix\/cleanup\[\d+\]: \w+: message-id=<[0-9a-f]{32}\.postroom@acme\.test>/g) ?? [];
  assert.equal(submissions.length, 1, "Postfix saw the message once");
});

test("smtp-sender killed after Postfix's 250 but before the row could say so (as when PostgreSQL is down): the restarted sender finds the receipt and never sends again", async () => {
  await w.system.stopService("smtp-sender", "SIGKILL");
  // Holds after the 250 and its receipt in JetStream, with the row still "sending".
  w.system.startService("smtp-sender", { POSTROOM_FAILPOINT: "smtp-sender.before-recorded" });
  const key = await w.archivedOriginal(customerEmail({ from: CUSTOMER, to: SUPPORT, subject: "Delivery date", messageId: "<delivery-1@customer.test>" }));
  await w.requestSend({ commandId: "reply-delivery-1", kind: "reply", original: key, to: [CUSTOMER], text: "It leaves the warehouse on Monday." });

  await waitFor(
    async () => w.system.logs.some((l) => l.service === "smtp-sender" && l.line.includes("failpoint reached") && l.line.includes("reply-delivery-1")),
    { timeoutMs: 60_000, what: () => `the sender to hold after the 250\n${w.system.dump()}` },
  );
  await w.system.stopService("smtp-sender", "SIGKILL");
  const [row] = await w.rows<{ state: string; attempts: number }>("SELECT state, attempts FROM sends WHERE command_id = $1", ["reply-delivery-1"]);
  assert.deepEqual(row, { state: "sending", attempts: 1 }, "the row never heard of the 250");

  w.system.startService("smtp-sender");
  await waitFor(async () => (await w.rows("SELECT 1 FROM messages WHERE message_key = $1", ["acme/support/sent/reply-delivery-1"])).length === 1, {
    timeoutMs: 90_000,
    what: () => `the reply archived after the restart\n${w.system.dump()}`,
  });
  const [done] = await w.rows<{ state: string; attempts: number; server_response: string }>("SELECT state, attempts, server_response FROM sends WHERE command_id = $1", ["reply-delivery-1"]);
  assert.equal(done?.state, "sent");
  assert.equal(done?.attempts, 1, "no second SMTP attempt");
  assert.match(done?.server_response ?? "", /^250 /, "the server's words, from the receipt");
  const copies = await w.waitForMail(CUSTOMER, (m) => m.includes("It leaves the warehouse on Monday."));
  assert.equal(copies.length, 1);
  const submissions = (await w.postfix.readLog()).match(/postfix\/cleanup\[\d+\]: \w+: message-id=<[0-9a-f]{32}\.postroom@acme\.test>/g) ?? [];
  assert.equal(submissions.length, 2, "Postfix saw each of the two replies once");
});
