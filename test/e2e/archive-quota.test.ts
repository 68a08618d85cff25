import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { IngestControl, ingestKey, type MailboxStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { simpleParser } from "mailparser";
import { customerEmail } from "../support/mail.js";
import { E2eWorld, SUPPORT } from "../support/fixture.js";

// A 100 KiB archive quota, warning when half of it is left; each customer mail is ~20 KiB on disk.
const GIB = 1024 ** 3;
const QUOTA = 100 * 1024;

let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("archquota", (c) => {
    c.archive = { ...c.archive!, quotaGb: QUOTA / GIB, warnPercentLeft: 50, sendAlerts: true, alertRecipients: ["ops@acme.test"] };
  });
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

const bigEmail = (n: number) => customerEmail({ to: SUPPORT, subject: `order ${n}`, body: `${"x".repeat(76)}\r\n`.repeat(256) });
const inbound = async () => Number((await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages WHERE direction = 'inbound'"))[0]!.n);

async function alertMails(kind: RegExp) {
  const out = [];
  for (const m of w.smtp.messages) {
    const parsed = await simpleParser(m.raw);
    if (/^Postroom archive/.test(parsed.subject ?? "") && kind.test(parsed.subject ?? "")) out.push({ parsed, rcpt: m.envelope.rcptTo });
  }
  return out;
}

test("near the quota one warning e-mail arrives; past it ingestion pauses with the mail left on the IMAP server; raising the quota resumes it and every message is archived", async () => {
  const uids: number[] = [];
  for (let n = 1; n <= 3; n++) uids.push((await w.dovecot.appendMessage(SUPPORT, bigEmail(n))).uid);
  await waitFor(async () => (await inbound()) === 3, { timeoutMs: 30_000, what: () => `three archived\n${w.system.dump()}` });

  const [warning] = await waitFor(async () => {
    const m = await alertMails(/warning/);
    return m.length ? m : undefined;
  }, { timeoutMs: 30_000, what: () => `warning e-mail\n${w.system.dump()}` });
  // (smtp-sender also adds the mailbox's default BCC, records@acme.test, as it does to every send.)
  assert.ok(warning!.rcpt.includes("ops@acme.test"), warning!.rcpt.join(", "));
  assert.match(warning!.parsed.text ?? "", /Used: .* of a 100\.0 KiB quota/);
  assert.equal(warning!.parsed.headers.get("auto-submitted"), "auto-generated", "an automatic mail says so, so no one auto-replies to it");

  // Still room for one more: no second warning.
  uids.push((await w.dovecot.appendMessage(SUPPORT, bigEmail(4))).uid);
  await waitFor(async () => (await inbound()) === 4, { timeoutMs: 30_000, what: () => `fourth archived\n${w.system.dump()}` });

  // These do not fit.
  for (let n = 5; n <= 6; n++) uids.push((await w.dovecot.appendMessage(SUPPORT, bigEmail(n))).uid);
  const control = await openKv(w.nc, w.names.buckets.control);
  await waitFor(async () => {
    const e = await control.get(ingestKey("acme", "support"));
    return e?.value.length ? IngestControl.parse(e.json()).paused : false;
  }, { timeoutMs: 30_000, what: () => `ingestion paused\n${w.system.dump()}` });
  await waitFor(async () => (await alertMails(/critical/)).length === 1, { timeoutMs: 30_000, what: () => `critical e-mail\n${w.system.dump()}` });
  // Mail arriving during the pause stays on the server too: the poller, woken by IDLE, reads the pause.
  uids.push((await w.dovecot.appendMessage(SUPPORT, bigEmail(7))).uid);
  const status = await openKv(w.nc, w.names.buckets.mailboxStatus);
  await waitFor(async () => {
    const e = await status.get(w.names.mailboxKey("acme", "support"));
    return e?.value.length ? (e.json() as MailboxStatus).state === "paused" : false;
  }, { timeoutMs: 30_000, what: () => `poller paused\n${w.system.dump()}` });
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await inbound(), 4, "nothing past the quota was archived");
  const flags = await w.dovecot.flagsOf(SUPPORT);
  for (const uid of uids.slice(4)) {
    assert.ok(flags.has(uid), `uid ${uid} is still on the server`);
    assert.ok(!flags.get(uid)!.includes("\\Seen"), `uid ${uid} is not marked seen`);
  }
  assert.equal((await alertMails(/warning/)).length, 1, "one warning e-mail, not one per message");

  await w.system.rewriteConfig((c) => {
    c.archive!.quotaGb = (10 * 1024 * 1024) / GIB;
  });
  await w.system.stopService("archiver");
  w.system.startService("archiver");

  await waitFor(async () => (await inbound()) === 7, { timeoutMs: 60_000, what: () => `all seven archived\n${w.system.dump()}` });
  await waitFor(async () => {
    const f = await w.dovecot.flagsOf(SUPPORT);
    return uids.every((u) => f.get(u)?.includes("\\Seen"));
  }, { timeoutMs: 30_000, what: () => `all seven marked seen after archiving\n${w.system.dump()}` });
  const perUid = await w.rows<{ uid: string }>("SELECT uid FROM messages WHERE direction = 'inbound' ORDER BY uid");
  assert.deepEqual(perUid.map((r) => Number(r.uid)), uids, "every message exactly once");
  assert.equal((await alertMails(/warning/)).length, 1, "still one warning e-mail");
});
