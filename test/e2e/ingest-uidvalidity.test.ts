import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { IngestWorld, type PollerProcess } from "../support/ingest-world.js";

const USER = "support@acme.test";
let w: IngestWorld;
let poller: PollerProcess;

before(async () => {
  w = await IngestWorld.create("ingest-uidvalidity", [{ id: "support", user: USER, password: "pw", inbound: { checkIntervalSeconds: 5, firstStart: "from-now" } }], {
    services: ["token-service", "archiver", "asd-bridge"],
  });
});
after(async () => {
  await w?.close();
});

test("after the folder is recreated with a new UIDVALIDITY, no message is offered twice and mail that arrived meanwhile is not skipped", async () => {
  // Mail from before the first start: "from-now" leaves it alone, before and after the change.
  await w.dovecot.appendMessage(USER, customerEmail({ to: USER, subject: "old, before Postroom" }), { internalDate: new Date(Date.now() - 86_400_000) });
  poller = w.startPoller("p");
  await w.waitForState("acme", "support", "idle");
  for (let i = 0; i < 5; i++) await w.dovecot.appendMessage(USER, customerEmail({ to: USER, subject: `customer ${i}` }));
  // One exact copy of an earlier message (same Message-ID and bytes) that really arrived twice.
  const twin = customerEmail({ to: USER, subject: "sent twice", messageId: "<twin@customer.example>" });
  await w.dovecot.appendMessage(USER, twin);
  await w.dovecot.appendMessage(USER, twin);
  await waitFor(async () => (await w.count("SELECT count(*) AS n FROM sessions")) === 7, { timeoutMs: 30_000, what: () => `7 offered\n${w.dump()}` });

  const { before: oldValidity, after: newValidity } = await w.dovecot.recreateFolder(USER);
  assert.notEqual(oldValidity, newValidity);
  await w.dovecot.appendMessage(USER, customerEmail({ to: USER, subject: "arrived during the change" }));

  await waitFor(async () => (await w.count("SELECT count(*) AS n FROM sessions")) === 8, { timeoutMs: 40_000, what: () => `the new one offered\n${w.dump()}` });
  // Let the poller finish the folder (every re-mapped UID passes through the cursor).
  await waitFor(async () => poller.count("re-mapped after UIDVALIDITY change") >= 7, { timeoutMs: 30_000, what: () => `7 re-mapped\n${w.dump()}` });
  await waitFor(async () => (await w.status("acme", "support"))?.state === "idle", { timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 2_000)); // anything wrongly published would be archived by now

  const perSubject = await w.pool.query<{ subject: string; n: string }>(
    "SELECT m.subject, count(*) AS n FROM sessions s JOIN messages m ON m.id = s.message_id GROUP BY m.subject ORDER BY m.subject",
  );
  assert.deepEqual(
    perSubject.rows.map((r) => [r.subject, Number(r.n)]),
    [
      ["arrived during the change", 1],
      ["customer 0", 1],
      ["customer 1", 1],
      ["customer 2", 1],
      ["customer 3", 1],
      ["customer 4", 1],
      ["sent twice", 2],
    ],
    "each message offered once (the twin twice, as it arrived twice); the old one never",
  );
  assert.equal(await w.count("SELECT count(*) AS n FROM messages WHERE uid_validity = $1", [String(newValidity)]), 1, "only the new mail was published under the new UIDVALIDITY");
  assert.equal(await w.count("SELECT count(*) AS n FROM messages WHERE subject LIKE 'old%'"), 0);
});
