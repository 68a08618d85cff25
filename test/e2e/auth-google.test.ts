// Delegated Google OAuth end to end (a Gmail-style mailbox without app passwords: its owner signs
// in once in a browser, Postroom keeps the refresh token). Google's device flow does not grant the
// Gmail scope, so `postroom auth sign-in` listens on a loopback port and prints a sign-in address;
// the test plays the browser: it opens the address on the fake identity platform, whose consent
// screen redirects to the loopback port with a one-use code, which the command hands to
// token-service (the only process holding the PKCE verifier and the client secret). Then, with
// 6-second tokens, imap-poller reads the mailbox and smtp-sender sends through Postfix, both over
// XOAUTH2 checked by Dovecot, while Google rotates the refresh token on every refresh;
// token-service is restarted and carries on from its sealed store; the grant is revoked and the
// mailbox turns needs-admin with the re-sign-in command. No refresh token appears in any log, in
// the NATS traffic, or in any file in clear.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { MailboxAuthStatus, MailboxStatus } from "@postroom/contracts";
import { openKv } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { inboxSubjects } from "../support/operator.js";
import { AuthWorld, CUSTOMER, GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, MAILBOX } from "../support/auth-world.js";

let w: AuthWorld;
let configPath: string;
let traffic: string[] = [];

before(async () => {
  w = await AuthWorld.create("authgoogle", { tokenLifetimeSeconds: 6, google: true, googleRotates: true });
  configPath = join(w.dir.path, "postroom.yaml");
  traffic = w.captureTraffic();
  await w.system.start(["token-service", "archiver", "asd-bridge"]);
});

after(async () => {
  await w?.close();
});

/** `postroom auth sign-in` for the mailbox, with the browser signed in to Google as `as`. */
function signIn(as: string, consent = true): ReturnType<AuthWorld["signInWithBrowser"]> {
  return w.signInWithBrowser(["--config", configPath, "--mailbox", "acme/support"], as, consent);
}

function customerMail(n: number): string {
  return [`From: Ann <${CUSTOMER}>`, `To: ${MAILBOX}`, `Subject: Google question ${n}`, `Message-ID: <google-${n}@customer.test>`, `Date: ${new Date().toUTCString()}`, "", `Question ${n}.`, ""].join("\r\n");
}

async function archived(): Promise<number> {
  const rows = await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages WHERE direction = 'inbound' AND mailbox = 'support'");
  return Number(rows[0]!.n);
}

async function authState(): Promise<MailboxAuthStatus | undefined> {
  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  const e = await kv.get(w.names.mailboxAuthKey("acme", "support"));
  return e?.value.length ? MailboxAuthStatus.parse(e.json()) : undefined;
}

test("postroom auth sign-in runs Google's authorization-code flow with PKCE through a loopback redirect; another account or a refusal stores nothing", { timeout: 180_000 }, async () => {
  const wrong = await signIn("somebody-else@gmail.test");
  assert.equal(wrong.code, 1, wrong.out + wrong.err);
  assert.match(wrong.err, /signed in as somebody-else@gmail\.test, not as the mailbox support@acme\.test/);
  assert.equal(wrong.page.status, 400, "the browser is told the sign-in did not finish");
  const denied = await signIn(MAILBOX, false);
  assert.equal(denied.code, 1);
  assert.match(denied.err, /the identity platform refused the sign-in \(access_denied\)/);
  assert.equal((await authState())?.state, "needs-admin", "still not signed in");

  const good = await signIn(MAILBOX);
  assert.equal(good.code, 0, `${good.out}\n${good.err}\n${w.system.dump()}`);
  assert.match(good.out, /Done: signed in as support@acme\.test/);
  assert.equal(good.page.status, 200);
  assert.match(good.page.body, /Signed in as support@acme\.test/);
  // What the address carries, and what it must not.
  const q = good.authorizationUrl.searchParams;
  assert.equal(q.get("client_id"), GOOGLE_CLIENT_ID);
  assert.equal(q.get("code_challenge_method"), "S256");
  assert.equal(q.get("access_type"), "offline");
  assert.equal(q.get("login_hint"), MAILBOX);
  assert.ok(q.get("scope")?.split(" ").includes("https://mail.google.com/"));
  assert.ok(!good.authorizationUrl.href.includes(GOOGLE_CLIENT_SECRET), "no secret in the address");
  // Both codes (the wrong account's and the mailbox's) were redeemed by token-service with the
  // verifier and the client secret; the denied consent gave none.
  const redemptions = w.idp.tokenRequests.filter((r) => r.provider === "google" && r.fields.includes("code"));
  assert.equal(redemptions.filter((r) => r.status === 200).length, 2);
  for (const r of redemptions) for (const f of ["code_verifier", "client_secret", "redirect_uri"]) assert.ok(r.fields.includes(f), `${f} sent with the code`);
  assert.equal((await authState())?.signIn?.state, "done");
});

test("with 6-second tokens, IMAP reading and SMTP sending keep working over several lifetimes, each refresh rotating the refresh token", { timeout: 240_000 }, async () => {
  w.system.startService("imap-poller");
  w.system.startService("smtp-sender");
  await w.mailboxReady(60_000, "support");
  const refreshesBefore = w.idp.refreshRequests(GOOGLE_CLIENT_ID).length;
  // 20 s of 6-second tokens: more than three lifetimes.
  const round = await w.mailFlowFor(20_000, customerMail, "Google");
  await waitFor(async () => (await archived()) === round, { timeoutMs: 90_000, what: () => `${round} messages archived\n${w.system.dump()}` });
  await waitFor(
    async () => {
      const subjects = await inboxSubjects(w.dovecot, CUSTOMER);
      return new Set(subjects.filter((s) => s.startsWith("Google update "))).size === round;
    },
    { timeoutMs: 90_000, what: () => `${round} replies delivered\n${w.system.dump()}` },
  );
  const log = await w.dovecot.readLog();
  assert.match(log, /imap-login: (Info: )?Login: user=<support@acme\.test>, method=XOAUTH2/);
  assert.match(await readFile(w.postfix.info.logPath, "utf8"), /sasl_method=XOAUTH2, sasl_username=support@acme\.test/);
  assert.ok(w.idp.introspections.length > 0 && w.idp.introspections.every((i) => i.active), JSON.stringify(w.idp.introspections.filter((i) => !i.active)));
  const refreshes = w.idp.refreshRequests(GOOGLE_CLIENT_ID).slice(refreshesBefore);
  // Each refresh is answered with a new refresh token and the old one is dead at once: a refresh
  // that succeeds after the first proves the rotated one was kept.
  assert.ok(refreshes.length >= 3 && refreshes.every((r) => r.status === 200), `refreshes: ${refreshes.map((r) => r.status).join(",")}`);
});

test("a restarted token-service carries on from its sealed store without a new sign-in", { timeout: 120_000 }, async () => {
  const codes = w.idp.tokenRequests.filter((r) => r.fields.includes("code")).length;
  const refreshes = w.idp.refreshRequests(GOOGLE_CLIENT_ID).length;
  await w.system.stopService("token-service");
  w.system.startService("token-service");
  const n = (await archived()) + 1;
  await w.dovecot.appendMessage(MAILBOX, customerMail(1000));
  await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
  await waitFor(async () => (await archived()) === n, { timeoutMs: 90_000, what: () => `the message archived after the restart\n${w.system.dump()}` });
  await waitFor(() => w.idp.refreshRequests(GOOGLE_CLIENT_ID).slice(refreshes).some((r) => r.status === 200), { timeoutMs: 30_000, what: "a refresh after the restart" });
  assert.equal(w.idp.tokenRequests.filter((r) => r.fields.includes("code")).length, codes, "no new sign-in");
});

test("a revoked grant turns the mailbox needs-admin with the exact re-sign-in command", { timeout: 180_000 }, async () => {
  w.idp.revokeGrants(MAILBOX);
  const kv = await openKv(w.nc, w.names.buckets.mailboxStatus);
  let kicked = 0;
  const status = await waitFor(
    async () => {
      if (Date.now() - kicked > 3000) {
        kicked = Date.now();
        await w.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
      }
      const e = await kv.get(w.names.mailboxKey("acme", "support"));
      const s = e?.value.length ? MailboxStatus.parse(e.json()) : undefined;
      return s?.state === "needs-admin" ? s : undefined;
    },
    { timeoutMs: 120_000, what: () => `support needs-admin\n${w.system.dump()}` },
  );
  assert.equal(status.lastError?.fix, `sign the mailbox in again: postroom auth sign-in --config ${configPath} --mailbox acme/support`);
  assert.match(status.lastError?.message ?? "", /invalid_grant/);
  const auth = await authState();
  assert.equal(auth?.provider, "google-delegated");
  assert.equal(auth?.code, "invalid_grant");
});

test("no refresh token, client secret or store key appears in any log, the NATS traffic, or any file in clear", { timeout: 120_000 }, async () => {
  assert.ok(w.idp.issuedRefreshTokens.length >= 4, `${w.idp.issuedRefreshTokens.length} refresh tokens issued`);
  await w.assertNoGrantLeaks(traffic, [GOOGLE_CLIENT_SECRET]);
});
