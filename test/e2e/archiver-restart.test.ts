import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { E2eWorld, SUPPORT } from "../support/fixture.js";

let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("restart");
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

test("mail that arrives while the archiver is down is archived exactly once after it returns, and not marked seen before", async () => {
  const uids: number[] = [];
  for (let i = 0; i < 2; i++) uids.push((await w.dovecot.appendMessage(SUPPORT, customerEmail({ to: SUPPORT, subject: `before ${i}` }))).uid);
  await waitFor(async () => Number((await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages"))[0]!.n) === 2, {
    timeoutMs: 20_000,
    what: () => `first two archived\n${w.system.dump()}`,
  });

  await w.system.stopService("archiver");
  for (let i = 0; i < 5; i++) uids.push((await w.dovecot.appendMessage(SUPPORT, customerEmail({ to: SUPPORT, subject: `during ${i}` }))).uid);

  // The poller picks them up (IDLE) and publishes them; with no archiver nothing may be marked.
  await waitFor(async () => w.system.logs.filter((l) => l.service === "imap-poller" && l.line.includes("message published")).length >= 7, {
    timeoutMs: 20_000,
    what: () => `poller published all seven\n${w.system.dump()}`,
  });
  await new Promise((r) => setTimeout(r, 1000));
  const whileDown = await w.dovecot.flagsOf(SUPPORT);
  for (const uid of uids.slice(2)) assert.ok(!whileDown.get(uid)?.includes("\\Seen"), `uid ${uid} is not seen before it is archived`);
  assert.equal(Number((await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages"))[0]!.n), 2);

  w.system.startService("archiver");
  await waitFor(async () => Number((await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages"))[0]!.n) === 7, {
    timeoutMs: 30_000,
    what: () => `all seven archived\n${w.system.dump()}`,
  });
  await waitFor(
    async () => {
      const flags = await w.dovecot.flagsOf(SUPPORT);
      return uids.every((u) => flags.get(u)?.includes("\\Seen"));
    },
    { timeoutMs: 20_000, what: () => `all seven seen\n${w.system.dump()}` },
  );
  const perUid = await w.rows<{ uid: string; n: string }>("SELECT uid, count(*) AS n FROM messages GROUP BY uid ORDER BY uid");
  assert.deepEqual(perUid.map((r) => Number(r.uid)), uids, "every message once");
  assert.ok(perUid.every((r) => r.n === "1"));
  // asd-bridge opens each session from the archived event, after the archiver's row: wait for the
  // seventh, then check that there is no eighth.
  const sessions = await waitFor(
    async () => {
      const [row] = await w.rows<{ n: string }>("SELECT count(*) AS n FROM sessions");
      return Number(row!.n) >= 7 ? row!.n : undefined;
    },
    { timeoutMs: 20_000, what: () => `seven sessions
${w.system.dump()}` },
  );
  assert.equal(sessions, "7", "one session per email");
});
