// A Microsoft 365 mailbox with IMAP turned off, read and answered through Microsoft Graph: the
// test kit's fake Graph server (real HTTPS, delta queries with paging over a real Dovecot mailbox,
// throttling and lost delta state on demand) in front of the mailbox, tokens from the fake
// identity platform through token-service — app-only for the support mailbox, delegated (device
// code) for a second folder of the same account.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { PostroomConfigInput } from "@postroom/config";
import { MailboxStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { APP_ID, AuthWorld, CUSTOMER, MAILBOX, PUBLIC_CLIENT_ID } from "../support/auth-world.js";
import { operatorEnv, runPostroom } from "../support/operator.js";

let w: AuthWorld;
let configPath: string;
const BACKLOG = 500;

before(async () => {
  w = await AuthWorld.create("ingestgraph", {
    graph: true,
    tweak: (config: PostroomConfigInput, world) => {
      const tenant = config.tenants[0]!;
      // The same account's Archive folder, signed in as the person (device code, Graph scopes).
      tenant.mailboxes.push({
        id: "escalations",
        address: MAILBOX,
        inbound: { protocol: "graph", folder: "archive", checkIntervalSeconds: 2 },
        outbound: "graph",
        graph: { url: world.graph.url },
        auth: { type: "microsoft-delegated", clientId: PUBLIC_CLIENT_ID, tenant: "consumers", authorityHost: world.idp.info.authorityHost },
      });
    },
  });
  configPath = join(w.dir.path, "postroom.yaml");
  await w.system.start();
  await w.mailboxReady(60_000);
});

after(async () => {
  await w?.close();
});

/** Message n from customer n: one sender each, so the loop breaker (10 a sender) stays out of it. */
function customerMail(n: number, body = `Question ${n}.`): string {
  return [`From: Customer ${n} <${CUSTOMER.replace("@", `+${n}@`)}>`, `To: ${MAILBOX}`, `Subject: Graph question ${n}`, `Message-ID: <graph-${n}@customer.test>`, `Date: ${new Date().toUTCString()}`, "", body, ""].join("\r\n");
}

const sha = (raw: string) => createHash("sha256").update(raw).digest("hex");

async function count(sql: string, params: unknown[] = []): Promise<number> {
  return Number((await w.rows<{ n: string }>(sql, params))[0]!.n);
}

/** Appends messages first..last to a folder over one IMAP connection; returns their hashes. */
async function append(first: number, last: number, folder = "INBOX"): Promise<string[]> {
  const hashes: string[] = [];
  await w.dovecot.withImap(MAILBOX, async (client) => {
    if (folder !== "INBOX") await client.mailboxCreate(folder).catch(() => undefined);
    for (let i = first; i <= last; i++) {
      const raw = customerMail(i, `Question ${i}.\r\n${"Some detail about the order. ".repeat(1 + (i % 40))}`);
      await client.append(folder, raw);
      hashes.push(sha(raw));
    }
  });
  return hashes;
}

async function seenInInbox(): Promise<number> {
  return [...(await w.dovecot.flagsOf(MAILBOX)).values()].filter((f) => f.includes("\\Seen")).length;
}

const mime200 = () => w.graph.requests.filter((r) => r.method === "GET" && r.path.endsWith("/$value") && r.status === 200).length;

test(`a backlog of ${BACKLOG} arrives through delta paging exactly once, byte for byte, each offered once and marked read only after it is archived`, { timeout: 300_000 }, async () => {
  const hashes = await append(1, BACKLOG);
  let samples = 0;
  await waitFor(
    async () => {
      // Read Dovecot's \Seen first and the archive second: the archive only grows, so a message
      // marked read before it was archived would show as more read than archived.
      const seen = await seenInInbox();
      const archived = await count("SELECT count(*) AS n FROM messages WHERE mailbox = 'support' AND direction = 'inbound'");
      assert.ok(seen <= archived, `${seen} marked read but only ${archived} archived`);
      samples++;
      return seen === BACKLOG;
    },
    { timeoutMs: 240_000, intervalMs: 500, what: () => `all ${BACKLOG} marked read\n${w.system.dump()}` },
  );
  assert.ok(samples > 3, `the invariant was sampled ${samples} times`);
  const rows = await w.rows<{ sha256: string; protocol: string; uidl: string }>("SELECT sha256, protocol, uidl FROM messages WHERE mailbox = 'support' AND direction = 'inbound'");
  assert.equal(rows.length, BACKLOG, "each message archived once");
  assert.deepEqual(new Set(rows.map((r) => r.protocol)), new Set(["graph"]));
  assert.equal(new Set(rows.map((r) => r.uidl)).size, BACKLOG, "one Graph id each");
  assert.deepEqual(rows.map((r) => r.sha256).sort(), [...hashes].sort(), "the archive holds the exact bytes");
  await waitFor(async () => (await count("SELECT count(*) AS n FROM sessions s JOIN messages m ON m.id = s.message_id WHERE m.mailbox = 'support'")) === BACKLOG, {
    timeoutMs: 60_000,
    what: "every message offered",
  });
  assert.equal(await count("SELECT count(DISTINCT s.message_id) AS n FROM sessions s JOIN messages m ON m.id = s.message_id WHERE m.mailbox = 'support'"), BACKLOG, "none offered twice");
  const pages = w.graph.requests.filter((r) => r.path.endsWith("/messages/delta") && r.params.includes("$skiptoken") && r.status === 200).length;
  assert.ok(pages >= BACKLOG / 50 - 1, `${pages} follow-on pages read (50 a page)`);
  assert.equal(mime200(), BACKLOG, "each message's MIME fetched once");
});

test("throttling (429 with Retry-After) and a lost delta state (410) cost a wait and a re-read, never a duplicate", { timeout: 180_000 }, async () => {
  const before = mime200();
  w.graph.throttle(3, 1);
  await append(BACKLOG + 1, BACKLOG + 10);
  await waitFor(async () => (await count("SELECT count(*) AS n FROM messages WHERE mailbox = 'support'")) === BACKLOG + 10, { timeoutMs: 60_000, what: () => `10 more archived\n${w.system.dump()}` });
  assert.ok(w.graph.requests.some((r) => r.status === 429), "the poller was throttled");

  w.graph.expireDeltaTokens();
  const resyncFrom = w.graph.requests.length;
  await append(BACKLOG + 11, BACKLOG + 20);
  await waitFor(async () => (await count("SELECT count(*) AS n FROM messages WHERE mailbox = 'support'")) === BACKLOG + 20, { timeoutMs: 90_000, what: () => `10 more after the resync\n${w.system.dump()}` });
  const after410 = w.graph.requests.slice(resyncFrom);
  const gone = after410.findIndex((r) => r.status === 410);
  assert.ok(gone >= 0, "the old delta token was refused with 410");
  assert.ok(
    after410.slice(gone + 1).some((r) => r.path.endsWith("/messages/delta") && !r.params.includes("$deltatoken") && !r.params.includes("$skiptoken") && r.status === 200),
    "the folder was read again from the start",
  );
  assert.equal(mime200() - before, 20, "the re-read fetched only the 10 new messages' MIME, nothing already published");
  await waitFor(async () => (await count("SELECT count(*) AS n FROM sessions s JOIN messages m ON m.id = s.message_id WHERE m.mailbox = 'support'")) === BACKLOG + 20, { timeoutMs: 60_000, what: "the new ones offered" });
  assert.equal(await count("SELECT count(DISTINCT uidl) AS n FROM messages WHERE mailbox = 'support'"), BACKLOG + 20);
  await waitFor(async () => (await seenInInbox()) === BACKLOG + 20, { timeoutMs: 60_000, what: "all marked read" });
});

test("an app taken out of the mailbox's Graph scope turns the mailbox needs-admin with the fix; granted again, mail flows", { timeout: 120_000 }, async () => {
  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  w.graph.revoke(MAILBOX, APP_ID);
  const status = await waitFor(
    async () => {
      const e = await kv.get(w.names.mailboxKey("acme", "support"));
      const s = e?.value.length ? MailboxStatus.parse(e.json()) : undefined;
      return s?.state === "needs-admin" ? s : undefined;
    },
    { timeoutMs: 30_000, what: "needs-admin" },
  );
  assert.equal(status.lastError?.code, "ErrorAccessDenied");
  assert.match(status.lastError?.fix ?? "", /Mail\.ReadWrite.*New-ManagementRoleAssignment/);
  w.graph.grant(MAILBOX, APP_ID);
  await append(BACKLOG + 21, BACKLOG + 21);
  await waitFor(async () => (await count("SELECT count(*) AS n FROM messages WHERE mailbox = 'support'")) === BACKLOG + 21, { timeoutMs: 60_000, what: () => `archived after the grant\n${w.system.dump()}` });
});

test("a delegated Graph mailbox signs in with the device code and reads its folder with the person's token", { timeout: 180_000 }, async () => {
  let printed = "";
  const run = runPostroom(["auth", "sign-in", "--config", configPath, "--mailbox", "acme/escalations"], operatorEnv(w.security), (text) => (printed = text));
  const code = await waitFor(() => w.idp.deviceCodes.find((d) => d.pendingPolls >= 1 && d.approvedBy === undefined && printed.includes(d.userCode)), {
    timeoutMs: 60_000,
    what: () => `a device code printed and polled\n${printed}\n${w.system.dump()}`,
  });
  assert.deepEqual(code.scopes.filter((s) => s.includes("graph.microsoft.com")).sort(), ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"]);
  w.idp.approveDeviceCode(code.userCode, MAILBOX);
  const signed = await run;
  assert.equal(signed.code, 0, `${signed.out}\n${signed.err}`);
  // The first complete walk starts the folder "from now": mail appended after it is new.
  await w.mailboxReady(60_000, "escalations");
  const hashes = await append(9001, 9003, "Archive");
  await waitFor(async () => (await count("SELECT count(*) AS n FROM messages WHERE mailbox = 'escalations'")) === 3, { timeoutMs: 60_000, what: () => `3 archived from Archive\n${w.system.dump()}` });
  const rows = await w.rows<{ sha256: string }>("SELECT sha256 FROM messages WHERE mailbox = 'escalations'");
  assert.deepEqual(rows.map((r) => r.sha256).sort(), [...hashes].sort());
  await waitFor(async () => [...(await w.dovecot.flagsOf(MAILBOX, "Archive")).values()].filter((f) => f.includes("\\Seen")).length === 3, { timeoutMs: 30_000, what: "marked read" });
});

test("an agent's reply goes out through sendMail threaded, is filed in Sent Items by Graph, and is archived as sent", { timeout: 120_000 }, async () => {
  const [original] = await w.rows<{ message_key: string; rfc_message_id: string }>("SELECT message_key, rfc_message_id FROM messages WHERE mailbox = 'support' AND direction = 'inbound' ORDER BY id LIMIT 1");
  await w.requestSend({ commandId: "graph-reply-1", tenant: "acme", mailbox: "support", kind: "reply", original: original!.message_key, to: [], text: "Dear customer,\nit ships today." });
  const sent = await waitFor(() => w.graph.sent.find((m) => m.mime.toString("utf8").includes("it ships today")), { timeoutMs: 60_000, what: "the reply at Graph" }).catch(async (error: unknown) => {
    const sends = await w.rows("SELECT command_id, state, last_error FROM sends");
    const logs = w.system.logs.filter((l) => l.service === "smtp-sender").slice(-20).map((l) => l.line);
    throw new Error(`${(error as Error).message}\nsends: ${JSON.stringify(sends)}\n${logs.join("\n")}`);
  });
  const mime = sent.mime.toString("utf8");
  const rfcId = original!.rfc_message_id.replace(/^<?/, "<").replace(/>?$/, ">");
  assert.match(mime, new RegExp(`^In-Reply-To: ${rfcId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`, "m"), "threaded on the customer's message");
  assert.match(mime, /^Subject: Re: Graph question/m);
  await waitFor(async () => (await count("SELECT count(*) AS n FROM sends WHERE command_id = 'graph-reply-1' AND state = 'sent'")) === 1, { timeoutMs: 30_000, what: "the send recorded as sent" });
  await waitFor(async () => (await count("SELECT count(*) AS n FROM messages WHERE mailbox = 'support' AND direction = 'outbound'")) === 1, { timeoutMs: 30_000, what: "the reply archived" });
  const [archived] = await w.rows<{ sha256: string }>("SELECT sha256 FROM messages WHERE mailbox = 'support' AND direction = 'outbound'");
  assert.equal(archived!.sha256, createHash("sha256").update(sent.mime).digest("hex"), "the archived copy is the sent copy");
  assert.equal(w.graph.sent.filter((m) => m.mime.toString("utf8").includes("it ships today")).length, 1, "sent once");
  assert.equal((await w.dovecot.flagsOf(MAILBOX, "Sent")).size, 1, "Graph filed the one copy in Sent Items; smtp-sender appended none of its own");
});
