import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { names, type AcdStatus, type MailboxStatus } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { cleanupNamespace, natsUrl, tempDir, testNamespace } from "@postroom/testkit";
import { run } from "./status.js";
import { ago, statusLine } from "./status-table.js";
import { acdStatusLine } from "./acd-status-table.js";

const now = new Date("2026-11-28T10:10:00.000Z");
const base: MailboxStatus = {
  version: "v1",
  tenant: "acme",
  mailbox: "support",
  state: "idle",
  owner: "poller-1",
  lastCheckAt: "2026-11-28T10:09:30.000Z",
  lastMessageAt: "2026-11-28T09:00:00.000Z",
  backlog: 0,
  lastError: null,
  updatedAt: "2026-11-28T10:09:30.000Z",
  checkIntervalSeconds: 60,
};
const row = (status: MailboxStatus | undefined) => ({ tenant: "acme", mailbox: "support", protocol: "imap" as const, checkIntervalSeconds: 60, status });

test("a mailbox that checked within three intervals is shown as it reported, with no alarm", () => {
  const l = statusLine(row(base), now);
  assert.equal(l.cells[3], "idle");
  assert.equal(l.cells[5], "30s ago");
  assert.equal(l.cells[6], "70m ago");
  assert.equal(l.attention, false);
});

test("a mailbox whose last check is older than three intervals is STALLED, whatever it last claimed", () => {
  const l = statusLine(row({ ...base, lastCheckAt: "2026-11-28T10:06:59.000Z" }), now);
  assert.equal(l.cells[3], "STALLED (idle)");
  assert.equal(l.attention, true);
});

test("needs-admin shows the server's text and the fix, and asks for attention", () => {
  const l = statusLine(row({ ...base, state: "needs-admin", lastError: { message: "[AUTHENTICATIONFAILED] Authentication failed.", code: "auth-failed", fix: "fix the password", at: base.updatedAt } }), now);
  assert.match(l.cells[8]!, /AUTHENTICATIONFAILED.*fix: fix the password/);
  assert.equal(l.attention, true);
});

test("a mailbox nobody reported is stalled", () => {
  assert.match(statusLine(row(undefined), now).cells[3]!, /STALLED/);
  assert.equal(ago(null, now), "never");
  assert.equal(ago("2026-11-25T10:10:00.000Z", now), "3d ago");
});

const acdBase: AcdStatus = {
  version: "v1",
  tenant: "acme",
  acd: "webhook",
  state: "connected",
  since: "2026-11-28T10:00:00.000Z",
  lastError: null,
  heldBack: 0,
  unanswered: { count: 0, oldestAt: null, alertAfterSeconds: 600 },
  problems: [],
  updatedAt: "2026-11-28T10:09:59.000Z",
};

test("an unreachable ACD shows its held-back offers, the error and the fix, and asks for attention", () => {
  const l = acdStatusLine({ tenant: "acme", acd: "webhook", status: { ...acdBase, state: "unreachable", since: "2026-11-28T10:05:00.000Z", heldBack: 50, lastError: { message: "the ACD could not be reached: ECONNREFUSED", fix: "start the ACD", at: "2026-11-28T10:09:00.000Z" } } }, now);
  assert.deepEqual(l.cells.slice(0, 5), ["acme", "webhook", "UNREACHABLE", "5m ago", "50"]);
  assert.match(l.cells[7]!, /ECONNREFUSED — fix: start the ACD/);
  assert.equal(l.attention, true);
  assert.equal(acdStatusLine({ tenant: "acme", acd: "webhook", status: acdBase }, now).attention, false, "connected, nothing unanswered");
});

test("unanswered emails older than the alert age are OVERDUE; younger ones are only counted", () => {
  const young = acdStatusLine({ tenant: "acme", acd: "builtin", status: { ...acdBase, unanswered: { count: 2, oldestAt: "2026-11-28T10:05:00.000Z", alertAfterSeconds: 600 } } }, now);
  assert.deepEqual([young.cells[5], young.cells[6], young.attention], ["2", "5m", false]);
  const old = acdStatusLine({ tenant: "acme", acd: "builtin", status: { ...acdBase, unanswered: { count: 2, oldestAt: "2026-11-28T09:55:00.000Z", alertAfterSeconds: 600 } } }, now);
  assert.deepEqual([old.cells[5], old.cells[6], old.attention], ["2 (OVERDUE)", "15m", true]);
});

test("a reported ACD problem is listed with its subject, count and fix", () => {
  const l = acdStatusLine({ tenant: "acme", acd: "softdial", status: { ...acdBase, acd: "softdial", problems: [{ kind: "unknown-agent", subject: "agent-9", detail: "CallGem chose an agent Postroom has no account for", fix: "add agent-9 to tenants[0].agents", count: 3, lastAt: "2026-11-28T10:09:00.000Z" }] } }, now);
  assert.equal(l.attention, true);
  assert.match(l.problems[0]!, /unknown-agent agent-9 \(3×, last 60s ago\).*fix: add agent-9/);
});

const root = testNamespace("status");
const dir = tempDir("status");
after(async () => {
  await cleanupNamespace(natsUrl(), root);
  await dir.remove();
});

test("postroom status prints every configured mailbox from NATS and exits 1 when one needs attention", async () => {
  const config = join(dir.path, "postroom.yaml");
  await writeFile(
    config,
    `version: 1
nats: { url: "${natsUrl()}", namespace: ${root} }
database: { url: postgres://nobody@127.0.0.1/none }
archive: { path: ${dir.path}/archive }
tenants:
  - id: acme
    acd: { type: builtin }
    mailboxes:
      - id: support
        address: support@acme.test
        inbound: { protocol: imap, host: 127.0.0.1, checkIntervalSeconds: 60 }
        auth: { type: password, password: env:X }
        smtp: { host: 127.0.0.1 }
      - id: sales
        address: sales@acme.test
        inbound: { protocol: pop3, host: 127.0.0.1 }
        auth: { type: password, password: env:Y }
        smtp: { host: 127.0.0.1 }
`,
  );
  const nc = await connectNats({ url: natsUrl(), name: "status-test" });
  const kv = await openKv(nc, names(root).buckets.mailboxStatus);
  await kv.put("acme.support", JSON.stringify({ ...base, lastCheckAt: new Date().toISOString(), updatedAt: new Date().toISOString() }));
  const acdKv = await openKv(nc, names(root).buckets.acdStatus);
  const putAt = Date.now();
  await acdKv.put(names(root).acdStatusKey("acme"), JSON.stringify({ ...acdBase, acd: "builtin", unanswered: { count: 1, oldestAt: new Date(Date.now() - 30_000).toISOString(), alertAfterSeconds: 600 } }));
  await nc.close();

  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string) => (out.push(chunk), true)) as typeof process.stdout.write;
  let code: number;
  try {
    code = await run(["--config", config]);
  } finally {
    process.stdout.write = write;
  }
  const text = out.join("");
  assert.match(text, /^TENANT\s+MAILBOX\s+PROTO\s+STATE/m);
  assert.match(text, /acme\s+support\s+imap\s+idle\s+poller-1/);
  assert.match(text, /acme\s+sales\s+pop3\s+STALLED \(never reported\)/);
  assert.match(text, /^TENANT\s+ACD\s+STATE\s+SINCE\s+HELD BACK\s+UNANSWERED\s+OLDEST/m);
  // The oldest unanswered email was 30 s old when written; on a loaded machine the command may
  // print it a few seconds later, so the age is bounded by the time this test has taken since.
  const age = /acme\s+builtin\s+connected\s+\S+ ago\s+0\s+1\s+(\d+)s/.exec(text);
  assert.ok(age, `the ACD line shows one unanswered email and its age:\n${text}`);
  const seconds = Number(age[1]);
  assert.ok(seconds >= 29 && seconds <= 31 + Math.ceil((Date.now() - putAt) / 1000), `age ${seconds}s`);
  assert.equal(code, 1, "sales has never been checked");

  out.length = 0;
  process.stdout.write = ((chunk: string) => (out.push(chunk), true)) as typeof process.stdout.write;
  try {
    await run(["--config", config, "--json"]);
  } finally {
    process.stdout.write = write;
  }
  const acd = out.join("").trim().split("\n").map((l) => JSON.parse(l) as { kind?: string; status: AcdStatus | null }).find((o) => o.kind === "acd");
  assert.equal(acd?.status?.unanswered.count, 1);
});

test("an error that a later check has cleared is no longer shown; one the mailbox still backs off from is", () => {
  const lastError = { message: "connect ECONNREFUSED 127.0.0.1:10143", code: "ECONNREFUSED", fix: "start the server", at: "2026-11-28T10:05:00.000Z" };
  const cleared = statusLine(row({ ...base, lastError }), now);
  assert.equal(cleared.cells[8], "", "idle, checked at 10:09:30 after the 10:05 error");
  const standing = statusLine(row({ ...base, state: "backing-off", lastError }), now);
  assert.match(standing.cells[8]!, /ECONNREFUSED.*fix: start the server/);
  const notYet = statusLine(row({ ...base, lastError: { ...lastError, at: "2026-11-28T10:09:45.000Z" } }), now);
  assert.match(notYet.cells[8]!, /ECONNREFUSED/, "no check has completed since the error");
});
