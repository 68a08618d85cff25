import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, test } from "node:test";
import nodemailer from "nodemailer";
import { startDovecot, type DovecotServer, freePort, dovecotAuthListener, startPostfix, type PostfixServer, stopAll, waitFor } from "@postroom/mail-servers";

let dovecot: DovecotServer;
let postfix: PostfixServer;
const SUPPORT = "support@acme.test";
const CUSTOMER = "ann@customer.test";

before(async () => {
  const saslPort = await freePort();
  dovecot = await startDovecot({
    users: [
      { user: SUPPORT, password: "pw-support" },
      { user: CUSTOMER, password: "pw-ann" },
    ],
    lmtp: true,
    extraConfig: dovecotAuthListener(saslPort),
  });
  postfix = await startPostfix({ lmtpPort: dovecot.info.lmtpPort!, saslPort });
});

after(async () => {
  await stopAll([dovecot, postfix]);
});

async function inbox(user: string): Promise<string[]> {
  return dovecot.withImap(user, async (client) => {
    const lock = await client.getMailboxLock("INBOX");
    try {
      const out: string[] = [];
      for await (const m of client.fetch("1:*", { source: true })) out.push(m.source!.toString("utf8"));
      return out;
    } catch {
      return [];
    } finally {
      lock.release();
    }
  });
}

test("a message submitted over STARTTLS with a Dovecot login lands in the recipient's Dovecot mailbox", async () => {
  const ca = await readFile(postfix.info.caCertPath);
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: postfix.info.submissionPort,
    requireTLS: true,
    tls: { ca },
    auth: { user: SUPPORT, pass: "pw-support" },
  });
  const info = await transport.sendMail({ from: SUPPORT, to: CUSTOMER, subject: "over starttls", text: "hello" });
  transport.close();
  assert.match(info.response, /^250 2\.0\.0 Ok: queued/);
  const messages = await waitFor(async () => {
    const m = await inbox(CUSTOMER);
    return m.some((s) => s.includes("Subject: over starttls")) ? m : undefined;
  }, { timeoutMs: 15_000, what: "delivery over LMTP" });
  assert.equal(messages.filter((s) => s.includes("Subject: over starttls")).length, 1);
});

test("implicit TLS works too, and a wrong password or a foreign sender is refused", async () => {
  const ca = await readFile(postfix.info.caCertPath);
  const ok = nodemailer.createTransport({ host: "127.0.0.1", port: postfix.info.smtpsPort, secure: true, tls: { ca }, auth: { user: SUPPORT, pass: "pw-support" } });
  await ok.sendMail({ from: SUPPORT, to: CUSTOMER, subject: "over implicit tls", text: "hello" });
  await assert.rejects(ok.sendMail({ from: "ceo@acme.test", to: CUSTOMER, subject: "spoof", text: "x" }), (e: { responseCode?: number }) => e.responseCode === 553);
  ok.close();
  const bad = nodemailer.createTransport({ host: "127.0.0.1", port: postfix.info.smtpsPort, secure: true, tls: { ca }, auth: { user: SUPPORT, pass: "wrong" } });
  await assert.rejects(bad.sendMail({ from: SUPPORT, to: CUSTOMER, subject: "x", text: "x" }), (e: { responseCode?: number }) => e.responseCode === 535);
  bad.close();
  await waitFor(async () => (await inbox(CUSTOMER)).some((s) => s.includes("Subject: over implicit tls")), { timeoutMs: 15_000, what: "delivery" });
});

test("without TLS, the submission port does not offer AUTH (it would leak the password)", async () => {
  const plain = nodemailer.createTransport({ host: "127.0.0.1", port: postfix.info.submissionPort, ignoreTLS: true, auth: { user: SUPPORT, pass: "pw-support" } });
  await assert.rejects(plain.sendMail({ from: SUPPORT, to: CUSTOMER, subject: "x", text: "x" }));
  plain.close();
});
