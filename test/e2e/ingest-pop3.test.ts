import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { IngestWorld } from "../support/ingest-world.js";

const LEAVE = "leave@acme.test";
const DELETE = "delete@acme.test";
let w: IngestWorld;

before(async () => {
  w = await IngestWorld.create("ingest-pop3", [
    { id: "leave", user: LEAVE, password: "pw-leave", inbound: { protocol: "pop3", checkIntervalSeconds: 1, pop3LeaveOnServer: true } },
    { id: "delete", user: DELETE, password: "pw-delete", inbound: { protocol: "pop3", checkIntervalSeconds: 1, pop3LeaveOnServer: false } },
  ]);
});
after(async () => {
  await w?.close();
});

async function onServer(user: string): Promise<number> {
  const out = await w.dovecot.doveadm(["mailbox", "status", "-u", user, "messages", "INBOX"]);
  return Number(/messages=(\d+)/.exec(out)?.[1]);
}

async function archived(mailbox: string): Promise<number> {
  return w.count("SELECT count(*) AS n FROM messages WHERE mailbox = $1", [mailbox]);
}

test("POP3 leave-on-server and delete-after-archiving each deliver every message once, across a crash and restart", async () => {
  let poller = w.startPoller("first");
  await w.waitForState("acme", "leave", "idle");
  await w.waitForState("acme", "delete", "idle");
  for (let i = 0; i < 3; i++) {
    await w.dovecot.appendMessage(LEAVE, customerEmail({ to: LEAVE, subject: `leave ${i}` }));
    await w.dovecot.appendMessage(DELETE, customerEmail({ to: DELETE, subject: `delete ${i}` }));
  }
  await waitFor(async () => (await archived("leave")) === 3 && (await archived("delete")) === 3, { timeoutMs: 30_000, what: () => `6 archived\n${w.dump()}` });
  await waitFor(async () => (await onServer(DELETE)) === 0, { timeoutMs: 20_000, what: () => `deleted after archiving\n${w.dump()}` });
  assert.equal(await onServer(LEAVE), 3, "leave-on-server never deletes");
  const firstPublished = poller.count("message published");

  // A crash (no goodbye, lease left to expire), more mail meanwhile, a new process.
  await poller.kill("SIGKILL");
  for (let i = 3; i < 5; i++) {
    await w.dovecot.appendMessage(LEAVE, customerEmail({ to: LEAVE, subject: `leave ${i}` }));
    await w.dovecot.appendMessage(DELETE, customerEmail({ to: DELETE, subject: `delete ${i}` }));
  }
  poller = w.startPoller("second");
  await waitFor(async () => (await archived("leave")) === 5 && (await archived("delete")) === 5, { timeoutMs: 40_000, what: () => `10 archived\n${w.dump()}` });
  // A "mail.archived" the server handed to the killed process's pull request is redelivered
  // after the commit consumer's 30 s ack deadline: the deletion may wait that long, never less safe.
  await waitFor(async () => (await onServer(DELETE)) === 0, { timeoutMs: 45_000, what: () => `deleted after archiving\n${w.dump()}` });
  // Several more sessions over the five messages left on the server: none is fetched again.
  const sessionsBefore = (await w.dovecot.readLog()).split("\n").filter((l) => l.includes("pop3(leave@acme.test)") && l.includes("Disconnected")).length;
  await waitFor(
    async () => (await w.dovecot.readLog()).split("\n").filter((l) => l.includes("pop3(leave@acme.test)") && l.includes("Disconnected")).length >= sessionsBefore + 3,
    { timeoutMs: 20_000, what: "three more POP3 sessions" },
  );
  assert.equal(await onServer(LEAVE), 5);
  console.log(`published: ${firstPublished} by the first process, ${poller.count("message published")} by the second`);
  assert.equal(firstPublished + poller.count("message published"), 10, "the poller published each message once, before and after the restart");
  assert.equal(await w.count("SELECT count(DISTINCT (mailbox, uidl)) AS n FROM messages WHERE protocol = 'pop3'"), 10);
  const status = await w.status("acme", "delete");
  assert.equal(status?.protocol, "pop3");
  assert.ok(status?.lastCheckAt, "POP3 checks are reported");
});
