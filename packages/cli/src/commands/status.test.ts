import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { names, type MailboxStatus } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { cleanupNamespace, natsUrl, tempDir, testNamespace } from "@postroom/testkit";
import { run } from "./status.js";
import { ago, statusLine } from "./status-table.js";

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
  assert.equal(code, 1, "sales has never been checked");
});
