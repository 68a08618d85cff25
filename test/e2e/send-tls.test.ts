import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { simpleParser } from "mailparser";
import type { MailboxStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { startSmtpSink, waitFor, type SmtpSink } from "@postroom/testkit";
import { CUSTOMER, PASSWORD, SendWorld } from "../support/send-world.js";

let w: SendWorld;
let selfSigned: SmtpSink;

before(async () => {
  // A server whose certificate nobody trusts (smtp-server's built-in self-signed one).
  selfSigned = await startSmtpSink({ starttls: true, users: ["strict@acme.test", "lab@acme.test"].map((username) => ({ username, password: PASSWORD })) });
  w = await SendWorld.create("sendtls", {
    tls: "implicit",
    tweak: (config) => {
      const support = config.tenants[0]!.mailboxes[0]!;
      for (const [id, verifyCertificate] of [["strict", true], ["lab", false]] as const) {
        config.tenants[0]!.mailboxes.push({
          ...support,
          id,
          address: `${id}@acme.test`,
          auth: { type: "password", password: "env:SUPPORT_PASSWORD" },
          smtp: { host: "127.0.0.1", port: selfSigned.info.port, tls: "starttls", verifyCertificate },
          defaultCc: [],
          defaultBcc: [],
        });
      }
    },
  });
  for (const id of ["strict", "lab"]) await w.dovecot.setUser(`${id}@acme.test`, PASSWORD);
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
  await selfSigned?.stop();
});

test("implicit TLS (465-style) to Postfix with its certificate verified delivers into the customer's mailbox", async () => {
  await w.requestSend({ commandId: "new-over-implicit-tls", kind: "new", to: [CUSTOMER], subject: "Sent over implicit TLS", text: "z" });
  const [m] = await w.waitForMail(CUSTOMER, (raw) => raw.includes("Sent over implicit TLS"));
  assert.equal((await simpleParser(m!)).subject, "Sent over implicit TLS");
  // The smtps listener speaks only TLS (wrapper mode) and Postfix allows AUTH only over TLS.
  assert.match(await w.postfix.readLog(), /postfix\/smtps\/smtpd\[\d+\]: \w+: client=localhost\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=support@acme\.test/);
});

test("an untrusted certificate stops the send before login and asks an administrator; only an explicit verifyCertificate: false sends to it", async () => {
  await w.publishFor("strict", { commandId: "new-to-untrusted", kind: "new", to: [CUSTOMER], subject: "Should wait", text: "z" });
  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  const status = await waitFor(
    async () => {
      const e = await kv.get(w.names.mailboxSmtpKey("acme", "strict"));
      const s = e?.value.length ? (e.json() as MailboxStatus) : undefined;
      return s?.state === "needs-admin" ? s : undefined;
    },
    { timeoutMs: 20_000, what: () => `needs-admin for the untrusted certificate\n${w.system.dump()}` },
  );
  assert.match(status.lastError?.message ?? "", /certificate/i);
  assert.match(status.lastError?.fix ?? "", /verifyCertificate: false only for tests/);
  assert.equal(selfSigned.authAttempts.length, 0, "no password went to a server we could not verify");
  assert.equal(selfSigned.messages.length, 0);

  await w.publishFor("lab", { commandId: "new-to-lab", kind: "new", to: [CUSTOMER], subject: "Lab server", text: "z" });
  const [sent] = await selfSigned.waitForMessages(1, 20_000);
  assert.match(sent!.raw.toString(), /Subject: Lab server/);
  assert.equal(selfSigned.messages.length, 1, "still nothing from the strict mailbox");
});
