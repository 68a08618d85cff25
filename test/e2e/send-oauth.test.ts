import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { CUSTOMER, SendWorld } from "../support/send-world.js";

let w: SendWorld;

before(async () => {
  w = await SendWorld.create("sendoauth", { oauth: true });
  await w.system.start();
  await w.mailboxReady(120_000);
});

after(async () => {
  await w?.close();
});

test("password SMTP refused with 5.7.139: the mailbox's smtp status names the fix; after switching the config to OAuth the next send goes out over XOAUTH2", { timeout: 120_000 }, async () => {
  await w.requestSend({ commandId: "new-basic-refused", kind: "new", to: [CUSTOMER], subject: "Before the switch", text: "held" });
  const status = await waitFor(
    async () => {
      const s = await w.smtpStatus();
      return s?.state === "needs-admin" ? s : undefined;
    },
    { timeoutMs: 30_000, what: () => `needs-admin\n${w.system.dump()}` },
  );
  assert.match(status.lastError?.message ?? "", /^535 5\.7\.8 Error: authentication failed: 5\.7\.139/);
  assert.equal(status.lastError?.code, "535");
  // The same fix config check and the Softdial import give ahead of the end of password SMTP.
  assert.match(status.lastError?.fix ?? "", /end of December 2026\): switch this mailbox's SMTP to OAuth: smtp\.auth: \{ type: microsoft365/);
  const [held] = await w.rows<{ state: string }>("SELECT state FROM sends WHERE command_id = $1", ["new-basic-refused"]);
  assert.equal(held!.state, "pending", "held, not failed");

  // The administrator follows the fix: the mailbox's smtp uses its Microsoft 365 app (no smtp.auth
  // means "the mailbox's auth"); token-service and smtp-sender restart with the new config.
  await w.rewriteConfig((config) => {
    delete config.tenants[0]!.mailboxes[0]!.smtp!.auth;
  });
  await w.system.stopService("token-service");
  await w.system.stopService("smtp-sender");
  w.system.startService("token-service");
  w.system.startService("smtp-sender");

  await w.requestSend({ commandId: "new-after-oauth", kind: "new", to: [CUSTOMER], subject: "After the switch", text: "over OAuth" });
  await w.waitForMail(CUSTOMER, (m) => m.includes("After the switch"), 1, 45_000);
  assert.match(await w.postfix.readLog(), /sasl_method=XOAUTH2, sasl_username=support@acme\.test/);
  await waitFor(async () => (await w.smtpStatus())?.state === "idle", { timeoutMs: 15_000, what: () => `smtp status idle\n${w.system.dump()}` });
});
