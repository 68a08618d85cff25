import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startDovecot, type DovecotServer } from "@postroom/testkit";
import { appendToSentFolder } from "./sent-folder.js";

let dovecot: DovecotServer;
const SUPPORT = "support@acme.test";

before(async () => {
  dovecot = await startDovecot({ users: [{ user: SUPPORT, password: "pw" }] });
});

after(async () => {
  await dovecot?.stop();
});

const raw = Buffer.from(
  ["From: support@acme.test", "To: ann@customer.test", "Subject: Re: Order", "Message-ID: <abc.postroom@acme.test>", "", "Thanks.", ""].join("\r\n"),
);

test("a sent message is copied into the Sent folder (created if missing) once, however often it is asked", async () => {
  const target = {
    server: { host: dovecot.info.host, port: dovecot.info.imapPort, tls: "none" as const, verifyCertificate: true },
    credential: { version: "v1" as const, mechanism: "PLAIN" as const, username: SUPPORT, password: "pw" },
    folder: "Sent",
  };
  assert.equal(await appendToSentFolder(raw, "<abc.postroom@acme.test>", target), "appended");
  assert.equal(await appendToSentFolder(raw, "<abc.postroom@acme.test>", target), "already-there");
  const flags = await dovecot.flagsOf(SUPPORT, "Sent");
  assert.equal(flags.size, 1);
  assert.deepEqual([...flags.values()][0], ["\\Seen"]);
  assert.equal((await dovecot.flagsOf(SUPPORT, "INBOX")).size, 0, "nothing in the INBOX the poller reads");
});
