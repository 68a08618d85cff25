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
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { PostroomConfigInput } from "@postroom/config";
import { MailboxStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { inboxSubjects, operatorEnv, runPostroom } from "../support/operator.js";
import { AuthWorld, CUSTOMER, MAILBOX, PUBLIC_CLIENT_ID } from "../support/auth-world.js";

let w: AuthWorld;
let configPath: string;
let traffic: string[] = [];
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
  traffic = w.captureTraffic();
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

/** Runs the postroom command as the operator; resolves with its exit code and output. */
function postroom(args: string[], onOutput?: (text: string) => void): Promise<{ code: number; out: string; err: string }> {
  return runPostroom(args, operatorEnv(w.security), onOutput);
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
    }, { timeoutMs: 60_000, what: () => `a device code printed and polled for ${mailbox}\n${printed}\n${w.system.dump()}` }),
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

test("postroom auth sign-in runs the device-code flow (or, with --browser, an authorization code) in token-service; a sign-in as another account is refused", { timeout: 180_000 }, async () => {
  // Two operators at once: one signs the IMAP mailbox in, the other signs the POP3 one in with
  // the wrong account first.
  const [good, wrong] = await Promise.all([signIn("support"), signIn("support-pop", "somebody-else@outlook.test")]);
  assert.equal(wrong.code, 1, wrong.out + wrong.err);
  assert.match(wrong.err, /signed in as somebody-else@outlook\.test, not as the mailbox support@acme\.test/);
  // Where a browser is at hand: the POP3 mailbox signs in with --browser (authorization code,
  // PKCE, a loopback redirect) instead of a device code.
  const browser = await w.signInWithBrowser(["--config", configPath, "--mailbox", "acme/support-pop", "--browser"], MAILBOX);
  for (const r of [good, browser]) {
    assert.equal(r.code, 0, `${r.out}\n${r.err}\n${w.system.dump()}`);
    assert.match(r.out, /Done: signed in as support@acme\.test/);
  }
  assert.equal(browser.page.status, 200);
  const q = browser.authorizationUrl.searchParams;
  assert.equal(browser.authorizationUrl.pathname, "/consumers/oauth2/v2.0/authorize");
  assert.deepEqual([q.get("client_id"), q.get("code_challenge_method"), q.get("login_hint"), q.get("response_type")], [PUBLIC_CLIENT_ID, "S256", MAILBOX, "code"]);
  // The device-code poll was answered "authorization_pending" until the person approved.
  assert.ok(w.idp.deviceCodes.every((d) => d.pendingPolls >= 1));
  assert.equal(w.idp.deviceCodes.filter((d) => d.redeemed).length, 2);
  const redeemed = w.idp.requestsFor(PUBLIC_CLIENT_ID).filter((r) => r.fields.includes("code") && r.status === 200);
  assert.equal(redeemed.length, 1, "the browser's code redeemed once");
  assert.ok(redeemed[0]!.fields.includes("code_verifier"), "with the PKCE verifier");
});

test("with 8-second tokens, IMAP and POP3 reading and SMTP replies keep working over several lifetimes, each token from a rotated refresh token", { timeout: 240_000 }, async () => {
  w.system.startService("imap-poller");
  w.system.startService("smtp-sender");
  // Both mailboxes first: one first opened after a message arrived would leave it alone (from-now).
  await w.mailboxReady(60_000, "support");
  await w.mailboxReady(60_000, "support-pop");
  const refreshesBefore = w.idp.refreshRequests(PUBLIC_CLIENT_ID).length;
  // 26 s of 8-second tokens: more than three lifetimes, each ending in a refresh.
  const round = await w.mailFlowFor(26_000, customerMail, "Delegated");
  assert.ok(round >= 6, `${round} rounds`);
  await waitFor(async () => (await archived("support")) === round && (await archived("support-pop")) === round, {
    timeoutMs: 90_000,
    what: () => `${round} messages archived from IMAP and from POP3\n${w.system.dump()}`,
  });
  const delivered = await waitFor(
    async () => {
      const subjects = await inboxSubjects(w.dovecot, CUSTOMER);
      return subjects.filter((s) => s.startsWith("Delegated update ")).length >= round ? subjects : undefined;
    },
    { timeoutMs: 90_000, what: () => `${round} replies delivered\n${w.system.dump()}` },
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
  await waitFor(async () => (await archived("support")) === n && (await archived("support-pop")) === n, { timeoutMs: 90_000, what: () => `the message archived after the restart\n${w.system.dump()}` });
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
      { timeoutMs: 120_000, what: () => `${mailbox} needs-admin\n${w.system.dump()}` },
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

test("no refresh token, access token or store key appears in any log, the NATS traffic, or any file in clear", { timeout: 120_000 }, async () => {
  assert.ok(w.idp.issuedRefreshTokens.length >= 8, `${w.idp.issuedRefreshTokens.length} refresh tokens issued`);
  await w.assertNoGrantLeaks(traffic, []);
});
