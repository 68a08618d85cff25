import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import type { MailboxStatus, SendFailed } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { E2eWorld } from "../support/fixture.js";

let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("sendretry", (config) => {
    // Small, so the size check can be shown with a small message.
    config.tenants[0]!.mailboxes[0]!.smtp!.maxMessageBytes = 64 * 1024;
  });
  await w.system.start(["token-service", "smtp-sender"]);
  // The sender creates the streams and its consumer on start; commands before that have nowhere to go.
  const jsm = await jetstreamManager(w.nc);
  // Generous: starting two services through tsx on a loaded two-core machine can take a minute.
  await waitFor(() => jsm.consumers.info(w.names.streams.sendCommands, w.names.consumers.smtpSender()).then(() => true, () => false), {
    timeoutMs: 120_000,
    what: () => `smtp-sender's consumer\n${w.system.dump()}`,
  });
});

after(async () => {
  await w?.close();
});

async function lastFailed(): Promise<SendFailed | undefined> {
  const jsm = await jetstreamManager(w.nc);
  const m = await jsm.streams.getMessage(w.names.streams.mail, { last_by_subj: w.names.subjects.mailSendFailed("acme", "support") }).catch(() => null);
  return m ? (m.json() as SendFailed) : undefined;
}

test("a server that answers 451 twice, then 250, gets the message exactly once", async () => {
  w.smtp.reset();
  w.smtp.replyWith("data", { code: 451, message: "4.3.0 Temporary local problem, try again" }, { code: 451, message: "4.3.0 Temporary local problem, try again" });
  await w.requestSend({ commandId: "new-after-451s", tenant: "acme", mailbox: "support", kind: "new", to: ["ann@customer.example"], subject: "Your order", text: "It shipped." });

  const [message] = await w.smtp.waitForMessages(1, 30_000);
  assert.match(message!.raw.toString(), /Subject: Your order/);
  assert.deepEqual(
    w.smtp.attempts.filter((a) => a.stage === "data").map((a) => a.code),
    [451, 451, 250],
  );
  const [row] = await waitFor(
    async () => {
      const rows = await w.rows<{ state: string; attempts: number }>("SELECT state, attempts FROM sends WHERE command_id = $1", ["new-after-451s"]);
      return rows[0]?.state === "sent" ? rows : undefined;
    },
    { timeoutMs: 10_000, what: () => `sent row\n${w.system.dump()}` },
  );
  assert.equal(row!.attempts, 3, `three SMTP attempts\n${w.system.dump()}`);
  // Nothing more arrives once it was accepted (a retry after the 250 would show up here).
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(w.smtp.messages.length, 1);
});

test("a 550 is final: a failed event with the server's own text, and no second attempt", async () => {
  w.smtp.reset();
  w.smtp.replyWith("data", { code: 550, message: "5.7.1 Message rejected: content policy" });
  await w.requestSend({ commandId: "new-rejected-550", tenant: "acme", mailbox: "support", kind: "new", to: ["ann@customer.example"], subject: "Offer", text: "x" });

  const failed = await waitFor(async () => ((await lastFailed())?.commandId === "new-rejected-550" ? lastFailed() : undefined), {
    timeoutMs: 20_000,
    what: () => `failed event\n${w.system.dump()}`,
  });
  assert.equal(failed!.permanent, true);
  assert.equal(failed!.responseCode, 550);
  assert.match(failed!.serverResponse ?? "", /550 5\.7\.1 Message rejected: content policy/);
  // Longer than the first two retry delays: a retry would have reached the server by now.
  await new Promise((r) => setTimeout(r, 4000));
  assert.deepEqual(
    w.smtp.attempts.filter((a) => a.stage === "data").map((a) => a.code),
    [550],
  );
  assert.equal(w.smtp.messages.length, 0);
  const [row] = await w.rows<{ state: string; attempts: number; last_error: string }>("SELECT state, attempts, last_error FROM sends WHERE command_id = $1", ["new-rejected-550"]);
  assert.equal(row!.state, "failed");
  assert.equal(row!.attempts, 1);
});

test("535 5.7.139: one fresh credential is tried, then the mailbox's smtp status shows the administrator's fix; once SMTP AUTH is back the next send goes out", async () => {
  w.smtp.reset();
  const exchange = { code: 535, message: "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information." };
  w.smtp.refuseAuth({ always: exchange });
  await w.requestSend({ commandId: "new-auth-disabled", tenant: "acme", mailbox: "support", kind: "new", to: ["ann@customer.example"], subject: "Held", text: "x" });

  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  const status = await waitFor(
    async () => {
      const e = await kv.get(w.names.mailboxSmtpKey("acme", "support"));
      const s = e?.value.length ? (e.json() as MailboxStatus) : undefined;
      return s?.state === "needs-admin" ? s : undefined;
    },
    { timeoutMs: 20_000, what: () => `needs-admin status\n${w.system.dump()}` },
  );
  assert.match(status.lastError?.message ?? "", /535 5\.7\.139/);
  assert.match(status.lastError?.fix ?? "", /Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled \$false/);
  assert.equal(status.lastError?.code, "535");
  assert.deepEqual(w.smtp.authAttempts.map((a) => a.code), [535, 535], "asked token-service once for a fresh credential, then stopped");
  const held = await waitFor(async () => ((await lastFailed())?.commandId === "new-auth-disabled" ? lastFailed() : undefined), { timeoutMs: 10_000, what: "held event" });
  assert.equal(held!.permanent, false, "the reply is held, not dropped");
  assert.match(held!.reason, /held until an administrator acts/);
  // The poller's own entry is untouched.
  const poller = await kv.get(w.names.mailboxKey("acme", "support"));
  assert.ok(!poller?.value.length || (poller.json() as MailboxStatus).state !== "needs-admin");

  // The administrator runs Set-CASMailbox; the next send goes out and the status clears.
  w.smtp.refuseAuth();
  await w.requestSend({ commandId: "new-after-fix", tenant: "acme", mailbox: "support", kind: "new", to: ["ann@customer.example"], subject: "After the fix", text: "y" });
  const [sent] = await w.smtp.waitForMessages(1, 20_000);
  assert.match(sent!.raw.toString(), /Subject: After the fix/);
  await waitFor(
    async () => {
      const e = await kv.get(w.names.mailboxSmtpKey("acme", "support"));
      return e?.value.length ? (e.json() as MailboxStatus).state === "idle" : false;
    },
    { timeoutMs: 10_000, what: "smtp status idle again" },
  );
});

test("a message over the mailbox's size limit is refused before any connection, with the limit and the fix", async () => {
  w.smtp.reset();
  await w.requestSend({ commandId: "new-too-large", tenant: "acme", mailbox: "support", kind: "new", to: ["ann@customer.example"], subject: "Big", text: "0123456789abcdef\n".repeat(8 * 1024) });
  const failed = await waitFor(async () => ((await lastFailed())?.commandId === "new-too-large" ? lastFailed() : undefined), {
    timeoutMs: 20_000,
    what: () => `failed event\n${w.system.dump()}`,
  });
  assert.equal(failed!.permanent, true);
  assert.match(failed!.reason, /over the mailbox's limit of 65536 bytes \(smtp\.maxMessageBytes\)/);
  assert.equal(w.smtp.authAttempts.length + w.smtp.attempts.length, 0, "the server was never contacted");
  const [row] = await w.rows<{ state: string; attempts: number; raw_object: string | null }>("SELECT state, attempts, raw_object FROM sends WHERE command_id = $1", ["new-too-large"]);
  assert.deepEqual(row, { state: "failed", attempts: 0, raw_object: null });
});
