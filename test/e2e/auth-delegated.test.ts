// Delegated OAuth end to end (an Outlook.com-style mailbox: a person signs in once, Postroom keeps
// the refresh token). `postroom auth sign-in` asks token-service to run the device-code flow
// against the fake identity platform; the test plays the person at the browser and approves the
// code the command printed. Then, with 8-second tokens, imap-poller reads the mailbox over IMAP
// and a second mailbox of the same account over POP3, and smtp-sender sends replies through
// Postfix, all over XOAUTH2 checked by Dovecot's oauth2 passdb, for several token lifetimes (each
// new token redeems and rotates the refresh token). token-service is restarted and carries on from
// its sealed store without a new sign-in. Then the grant is revoked (a password change): each
// mailbox turns needs-admin once, naming the exact re-sign-in command, in `postroom status` too.
// The refresh tokens appear in no log, no NATS traffic and no file, in clear.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import type { PostroomConfigInput } from "@postroom/config";
import { MailboxStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { OBSERVER } from "../support/secure-bus.js";
import { AuthWorld, CUSTOMER, FIXTURE_PASSWORD, MAILBOX, PUBLIC_CLIENT_ID, TOKEN_STORE_KEY } from "../support/auth-world.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const CLI = join(ROOT, "packages", "cli", "src", "main.ts");

let w: AuthWorld;
let configPath: string;
const traffic: string[] = [];
/** Every state the poller wrote for each mailbox, in order (the watch sees every put). */
const states = new Map<string, string[]>();

before(async () => {
  w = await AuthWorld.create("authdeleg", {
    tokenLifetimeSeconds: 8,
    delegated: true,
    tweak: (config: PostroomConfigInput, world) => {
      const tenant = config.tenants[0]!;
      const imap = tenant.mailboxes[0]!;
      const pop3Port = world.dovecot.info.pop3Port;
      // The same account read over POP3 as a second mailbox: its own sign-in, its own sealed grant.
      tenant.mailboxes.push({
        id: "support-pop",
        address: MAILBOX,
        inbound: { protocol: "pop3", host: "127.0.0.1", port: pop3Port, tls: "none", checkIntervalSeconds: 2, pop3LeaveOnServer: true },
        auth: imap.auth,
        agentsMayAnswer: false,
      });
    },
  });
  configPath = join(w.dir.path, "postroom.yaml");
  for (const subject of [`${w.namespace}.>`, "_INBOX.>", "$JS.API.>", "$KV.>"]) {
    const sub = w.nc.subscribe(subject);
    void (async () => {
      for await (const m of sub) traffic.push(`${m.subject} ${new TextDecoder().decode(m.data)}`);
    })();
  }
  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  const watch = await kv.watch({ key: "acme.*" });
  void (async () => {
    for await (const e of watch) {
      if (!e.value.length) continue;
      const s = MailboxStatus.safeParse(e.json());
      if (!s.success) continue;
      const list = states.get(s.data.mailbox) ?? [];
      if (list.at(-1) !== s.data.state) list.push(s.data.state);
      states.set(s.data.mailbox, list);
    }
  })();
  // The operator's order: token-service first, sign in, then the services that log in.
  await w.system.start(["token-service", "archiver", "asd-bridge"]);
});

after(async () => {
  await w?.close();
});

/** On a secure bus the operator's commands connect as a user of their own: the test's observer. */
function operatorEnv(): Record<string, string> {
  const bus = w.security.bus;
  return bus ? { NATS_USER: OBSERVER, NATS_PASSWORD: bus.passwords[OBSERVER]! } : {};
}

/** Runs the postroom command; resolves with its exit code and output. */
function postroom(args: string[], onOutput?: (text: string) => void): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", CLI, ...args], { cwd: ROOT, env: { ...process.env, ...operatorEnv(), POSTROOM_CONFIG: "" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("utf8");
      onOutput?.(out);
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
    child.once("exit", (code) => resolvePromise({ code: code ?? -1, out, err }));
  });
}

/** `postroom auth sign-in` for one mailbox, approving the printed code as `as` once token-service polls. */
async function signIn(mailbox: string, as = MAILBOX): Promise<{ code: number; out: string; err: string; userCode: string }> {
  let printed = "";
  const run = postroom(["auth", "sign-in", "--config", configPath, "--mailbox", `acme/${mailbox}`], (text) => (printed = text));
  // The person reads the code off the terminal, opens the page and signs in: wait for the code to
  // be printed and for token-service to be polling the platform with it.
  // A command that ends before its code is approved has failed: say how, at once.
  const ended = run.then((r) => {
    throw new Error(`postroom auth sign-in exited ${r.code} before a code was approved:\n${r.out}\n${r.err}\n${w.system.dump()}`);
  });
  const code = await Promise.race([
    waitFor(() => {
      // This command's code: several sign-ins may be under way at once.
      return w.idp.deviceCodes.find((d) => d.pendingPolls >= 1 && d.approvedBy === undefined && printed.includes(d.userCode));
    }, { timeoutMs: 60_000, what: `a device code printed and polled for ${mailbox}\n${printed}\n${w.system.dump()}` }),
    ended,
  ]);
  ended.catch(() => undefined);
  assert.match(printed, new RegExp(`open\\s+${w.idp.info.authorityHost.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/devicelogin`));
  w.idp.approveDeviceCode(code.userCode, as);
  return { ...(await run), userCode: code.userCode };
}

function customerMail(n: number): string {
  return [`From: Ann <${CUSTOMER}>`, `To: ${MAILBOX}`, `Subject: Delegated question ${n}`, `Message-ID: <deleg-${n}@customer.test>`, `Date: ${new Date().toUTCString()}`, "", `Question ${n}.`, ""].join("\r\n");
}

async function archived(mailbox: string): Promise<number> {
  const rows = await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages WHERE direction = 'inbound' AND mailbox = $1", [mailbox]);
  return Number(rows[0]!.n);
}

test("postroom auth sign-in runs the device-code flow in token-service; a sign-in as another account is refused", { timeout: 180_000 }, async () => {
  // Two operators at once: one signs the IMAP mailbox in, the other signs the POP3 one in with
  // the wrong account first.
  const [good, wrong] = await Promise.all([signIn("support"), signIn("support-pop", "somebody-else@outlook.test")]);
  assert.equal(wrong.code, 1, wrong.out + wrong.err);
  assert.match(wrong.err, /signed in as somebody-else@outlook\.test, not as the mailbox support@acme\.test/);
  for (const r of [good, await signIn("support-pop")]) {
    assert.equal(r.code, 0, `${r.out}\n${r.err}\n${w.system.dump()}`);
    assert.match(r.out, /Done: signed in as support@acme\.test/);
  }
  // The device-code poll was answered "authorization_pending" until the person approved.
  assert.ok(w.idp.deviceCodes.every((d) => d.pendingPolls >= 1));
  assert.equal(w.idp.deviceCodes.filter((d) => d.redeemed).length, 3);
});

test("with 8-second tokens, IMAP and POP3 reading and SMTP replies keep working over several lifetimes, each token from a rotated refresh token", { timeout: 240_000 }, async () => {
  w.system.startService("imap-poller");
  w.system.startService("smtp-sender");
  await w.mailboxReady(60_000, "support");
  const refreshesBefore = w.idp.refreshRequests(PUBLIC_CLIENT_ID).length;
  const started = Date.now();
  let round = 0;
  // 26 s of 8-second tokens: more than three lifetimes, each ending in a refresh.
  while (Date.now() - started < 26_000) {
    round++;
    await w.dovecot.appendMessage(MAILBOX, customerMail(round));
    // Cut the poller's connections: it logs in again with whatever token is current.
    if (round % 2 === 0) await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
    await w.requestSend({ commandId: `delegated-reply-${round}`, tenant: "acme", mailbox: "support", kind: "new", to: [CUSTOMER], subject: `Delegated update ${round}`, text: `Reply ${round}.` });
    await new Promise((r) => setTimeout(r, 3_000));
  }
  assert.ok(round >= 6, `${round} rounds`);
  await waitFor(async () => (await archived("support")) === round && (await archived("support-pop")) === round, {
    timeoutMs: 90_000,
    what: `${round} messages archived from IMAP and from POP3\n${w.system.dump()}`,
  });
  const delivered = await waitFor(
    async () => {
      const subjects = await w.dovecot.withImap(CUSTOMER, async (client) => {
        const lock = await client.getMailboxLock("INBOX");
        try {
          if (client.mailbox === false || client.mailbox.exists === 0) return [];
          return (await client.fetchAll("1:*", { envelope: true })).map((m) => m.envelope?.subject ?? "");
        } finally {
          lock.release();
        }
      });
      return subjects.filter((s) => s.startsWith("Delegated update ")).length >= round ? subjects : undefined;
    },
    { timeoutMs: 90_000, what: `${round} replies delivered\n${w.system.dump()}` },
  );
  assert.equal(new Set(delivered.filter((s) => s.startsWith("Delegated update "))).size, round);

  const log = await w.dovecot.readLog();
  assert.match(log, /imap-login: (Info: )?Login: user=<support@acme\.test>, method=XOAUTH2/);
  assert.match(log, /pop3-login: (Info: )?Login: user=<support@acme\.test>, method=XOAUTH2/);
  assert.doesNotMatch(log, /auth failed|Authentication failed|oauth2 failed/i);
  const postfixLog = await readFile(w.postfix.info.logPath, "utf8");
  assert.match(postfixLog, /sasl_method=XOAUTH2, sasl_username=support@acme\.test/);
  // Every token Dovecot checked was a valid delegated one, for IMAP, POP3 and SMTP.
  assert.ok(w.idp.introspections.every((i) => i.active), JSON.stringify(w.idp.introspections.filter((i) => !i.active)));
  assert.deepEqual(new Set(w.idp.introspections.map((i) => i.service)), new Set(["imap", "pop3", "smtp"]));
  const refreshes = w.idp.refreshRequests(PUBLIC_CLIENT_ID).slice(refreshesBefore);
  assert.ok(refreshes.length >= 4 && refreshes.every((r) => r.status === 200), `the refresh token was redeemed and rotated (${refreshes.length}, statuses ${refreshes.map((r) => r.status).join(",")})`);
  assert.deepEqual(states.get("support")?.filter((s) => s === "needs-admin"), [], "never needed an administrator");
});

test("a restarted token-service carries on from its sealed store without a new sign-in", { timeout: 120_000 }, async () => {
  const codes = w.idp.deviceCodes.length;
  const refreshes = w.idp.refreshRequests(PUBLIC_CLIENT_ID).length;
  await w.system.stopService("token-service");
  w.system.startService("token-service");
  const n = (await archived("support")) + 1;
  await w.dovecot.appendMessage(MAILBOX, customerMail(1000));
  await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
  await waitFor(async () => (await archived("support")) === n && (await archived("support-pop")) === n, { timeoutMs: 90_000, what: `the message archived after the restart\n${w.system.dump()}` });
  await waitFor(() => w.idp.refreshRequests(PUBLIC_CLIENT_ID).slice(refreshes).some((r) => r.status === 200), { timeoutMs: 30_000, what: "a refresh after the restart" });
  assert.equal(w.idp.deviceCodes.length, codes, "no new sign-in");
});

test("a revoked grant turns each mailbox needs-admin once, with the exact re-sign-in command, also in postroom status", { timeout: 180_000 }, async () => {
  w.idp.revokeGrants(MAILBOX);
  await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  for (const mailbox of ["support", "support-pop"]) {
    let kicked = Date.now();
    const status = await waitFor(
      async () => {
        // An IMAP connection that is logged in stays so: cut it now and then, so the poller logs
        // in again (with a fresh token once the cached one is near its end).
        if (Date.now() - kicked > 3000) {
          kicked = Date.now();
          await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
        }
        const e = await kv.get(w.names.mailboxKey("acme", mailbox));
        const s = e?.value.length ? MailboxStatus.parse(e.json()) : undefined;
        return s?.state === "needs-admin" ? s : undefined;
      },
      { timeoutMs: 120_000, what: `${mailbox} needs-admin\n${w.system.dump()}` },
    );
    assert.equal(status.lastError?.fix, `sign the mailbox in again: postroom auth sign-in --config ${configPath} --mailbox acme/${mailbox}`);
    assert.match(status.lastError?.message ?? "", /AADSTS50173/);
  }
  const shown = await postroom(["status", "--config", configPath, "--json"]);
  assert.equal(shown.code, 1, "status exits 1: a mailbox needs an administrator");
  const rows = shown.out.trim().split("\n").map((l) => JSON.parse(l) as { mailbox?: string; stalledOrNeedsAdmin?: boolean; status?: { lastError?: { fix?: string } } });
  for (const mailbox of ["support", "support-pop"]) {
    const row = rows.find((r) => r.mailbox === mailbox)!;
    assert.equal(row.stalledOrNeedsAdmin, true);
    assert.match(row.status?.lastError?.fix ?? "", new RegExp(`postroom auth sign-in --config \\S+ --mailbox acme/${mailbox}`));
  }
  // Once: token-service does not ask the platform again for a minute and the poller retries
  // slowly, so the state does not flap between needs-admin and anything else.
  for (const mailbox of ["support", "support-pop"]) assert.deepEqual(states.get(mailbox)?.filter((s) => s === "needs-admin"), ["needs-admin"], `${mailbox}: ${states.get(mailbox)?.join(" → ")}`);
  const adminLines = w.system.logs.filter((l) => l.service === "token-service" && l.line.includes("mailbox authentication needs an administrator") && l.line.includes('"mailbox":"support"'));
  assert.equal(adminLines.length, 1, adminLines.map((l) => l.line).join("\n"));
});

/** Every regular file under `dir`. */
async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await files(p)));
    else if (entry.isFile()) out.push(p);
  }
  return out;
}

test("no refresh token, access token or store key appears in any log, the NATS traffic, or any file in clear", { timeout: 120_000 }, async () => {
  await w.nc.flush();
  assert.ok(w.idp.issuedRefreshTokens.length >= 8, `${w.idp.issuedRefreshTokens.length} refresh tokens issued`);
  const logs = [...w.system.logs.map((l) => l.line), await w.dovecot.readLog(), await readFile(w.postfix.info.logPath, "utf8")].join("\n");
  const wire = traffic.join("\n");
  assert.ok(traffic.some((t) => t.includes(w.names.buckets.oauthGrants)), "the grant store's traffic was captured");
  for (const rt of w.idp.issuedRefreshTokens) {
    assert.ok(!logs.includes(rt), "a refresh token is in a log");
    assert.ok(!wire.includes(rt), "a refresh token is in the NATS traffic");
  }
  for (const token of w.idp.issuedTokens) assert.ok(!wire.includes(token), "an access token is in the NATS traffic");
  for (const secret of [TOKEN_STORE_KEY, FIXTURE_PASSWORD]) {
    assert.ok(!logs.includes(secret) && !wire.includes(secret), "a secret is in a log or the traffic");
  }
  // Files: the world's folder (config, archive), Dovecot's and Postfix's folders, and the NATS
  // server's JetStream files of this run's buckets (the sealed grants and the auth states), when
  // the server is the local one with its store where scripts/test-env.sh puts it.
  const streams = "/var/lib/nats-server/jetstream/$G/streams";
  const mine = (await readdir(streams).catch(() => [] as string[])).filter((d) => d.includes(w.namespace)).map((d) => join(streams, d));
  assert.ok(mine.some((d) => d.endsWith(w.names.buckets.oauthGrants)) || mine.length === 0, "the grant bucket's files are among those searched");
  const roots = [w.dir.path, w.dovecot.info.dir, join(w.postfix.info.logPath, ".."), ...mine];
  const needles = w.idp.issuedRefreshTokens.map((t) => Buffer.from(t));
  let scanned = 0;
  for (const root of roots) {
    for (const file of await files(root)) {
      const size = (await stat(file).catch(() => undefined))?.size ?? 0;
      if (size === 0 || size > 64 * 1024 * 1024) continue;
      const data = await readFile(file).catch(() => undefined);
      if (!data) continue;
      scanned++;
      for (const needle of needles) assert.ok(!data.includes(needle), `a refresh token is in ${file} in clear`);
    }
  }
  assert.ok(scanned > 10, `${scanned} files searched`);
});
